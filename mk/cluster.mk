# The hub: three NATS nodes and two gateway replicas as processes of their
# own (docs/deploy.md), and the failure tests that kill them.
VET_TAGS += cluster

.PHONY: run-cluster test-cluster

run-cluster: build ## The demo federation on a hub of 3 NATS nodes (JetStream R3) and 2 gateway replicas, each its own process (jisr dev --cluster 3)
	$(BIN)/jisr dev --cluster 3

test-cluster: ## Failure tests on a 3-node hub: kill -9 the audit stream's leader and a gateway replica under load, a revocation while a node is down (and the consent watch losing its node), a ministry's link cut (build tag cluster)
	cd gateway && $(GO) test -race -count=1 -tags cluster -timeout 5m -run 'TestTheRevocationWatchRecovers' ./consent
	cd cmd && $(GO) test -race -count=1 -tags cluster -timeout 20m -run 'TestCluster' -v ./jisr
