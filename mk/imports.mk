# Import rules: tools/importcheck checks every package of every go.work module
# (tests included) against tools/importcheck/rules.txt, quoted in
# docs/ARCHITECTURE.md. The tool is a module of its own, outside go.work, with
# no dependency but the standard library.

.PHONY: lint-imports

lint-imports: ## Fail on an import that breaks tools/importcheck/rules.txt
	cd tools/importcheck && GOWORK=off $(GO) vet . && GOWORK=off $(GO) test -count=1 . && GOWORK=off $(GO) run . -root $(CURDIR)
