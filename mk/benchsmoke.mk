# The bench harness end to end (cmd/jisr/bench_test.go): `jisr bench --quick
# --scaling`, every component a separate process, every scenario and the
# report checked. No assert on speed. About four minutes under -race on 2
# cores, so it runs beside `make test`, not in it, behind the `benchsmoke`
# build tag.

VET_TAGS += benchsmoke

.PHONY: test-bench

test-bench: ## The bench harness end to end: jisr bench --quick, every scenario and the report checked (-tags benchsmoke; ~4 min)
	cd cmd && $(GO) test -race -count=1 -v -tags benchsmoke -timeout 20m -run 'TestBenchQuickRunsEveryScenario' ./jisr/
