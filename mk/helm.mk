# The Helm chart (deploy/helm/jisr), linted and rendered through the Helm Go
# library by deploy/helm/test: a module of its own, outside go.work, so that
# Helm's dependencies stay out of the jisr binary's. Nothing is installed:
# there is no Kubernetes cluster here (docs/deploy-kubernetes.md).

.PHONY: test-helm

test-helm: ## Lint and template the Helm chart (three ministries) and check the rendered objects
	cd deploy/helm/test && GOWORK=off $(GO) vet . && GOWORK=off $(GO) test -count=1 .
