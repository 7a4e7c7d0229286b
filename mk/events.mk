# Life events (docs/events.md): the heavier delivery test, behind the
# `events` build tag — ten thousand events published while the receiving
# backend is down, delivered exactly once through a kill -9 of its adapter.

VET_TAGS += events

.PHONY: test-events

test-events: ## Life events: 10,000 events to a backend that was down, through a kill -9 of its adapter (-tags events)
	cd cmd && $(GO) test -race -count=1 -v -tags events -timeout 20m -run 'TestEventsReachABackendThatWasDown' ./jisr/
