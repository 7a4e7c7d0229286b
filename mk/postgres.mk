# The SQL backend against a real PostgreSQL server (build tag `postgres`):
# each test starts its own throwaway server (services/backend/sql/pgtest:
# initdb in a temporary directory, a Unix socket only; under root it runs as
# the postgres user). Needs Debian's postgresql package; .ci/run installs it.

.PHONY: test-postgres run-postgres
VET_TAGS += postgres

test-postgres: ## The SQL backend, `jisr dev --postgres` and the onboarding tour (docs/onboarding.md) against a throwaway PostgreSQL server
	cd services && $(GO) test -race -tags postgres -count=1 -timeout 10m ./backend/sql/...
	cd cmd && $(GO) test -race -tags postgres -count=1 -timeout 10m -run Postgres ./jisr

run-postgres: build ## make run with the civil registry served from PostgreSQL: make run-postgres POSTGRES=postgres://user@host/db
	@test -n "$(POSTGRES)" || { echo "give the database: make run-postgres POSTGRES=postgres://user@host/db"; exit 2; }
	$(BIN)/jisr dev --postgres "$(POSTGRES)"
