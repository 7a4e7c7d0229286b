package main

// PLACEHOLDER — replaced wholesale by the consent work (issue 4).

import (
	"context"
	"errors"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/jisr-bus/jisr/gateway"
)

type consentParts struct {
	Verifier gateway.ConsentVerifier
	Routes   map[string]http.Handler
	Close    func()
}

func startConsent(ctx context.Context, g *globals, nc *nats.Conn) (*consentParts, error) {
	return nil, errors.New("consent verification is not built yet")
}

type demoToken struct {
	Citizen, Consumer, Provider, Service string
	Methods, Fields                      []string
	Purpose, LegalBasis, JTI, Token      string
}

func demoConsents(ctx context.Context, g *globals, eids []string) ([]demoToken, error) {
	return nil, nil
}
