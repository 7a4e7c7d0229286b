# The Grafana dashboard and the alert rules against a real Prometheus (build
# tag `prometheus`): Debian's prometheus package (2.42, with promtool), which
# .ci/run installs. No Grafana server can be had here (docs/observability.md):
# the test does what Grafana would ask — every panel's queries, Grafana's
# variables substituted, through Prometheus's query_range — over jisr dev
# plus a standalone adapter and backend scraped as deploy/observability/
# prometheus.yml's jobs (cmd/jisr/prometheus_e2e_test.go).

.PHONY: test-prometheus
VET_TAGS += prometheus

test-prometheus: ## Every panel of the Grafana dashboard returns data from a real Prometheus scraping jisr dev; alerts.yml loads and evaluates
	cd cmd && $(GO) test -race -count=1 -tags prometheus -run '^(TestDashboardAndAlertsAgainstPrometheus|TestGrafanaVars)$$' -timeout 10m ./jisr
