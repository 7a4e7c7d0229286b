# The citizen's side in a real browser: headless Chromium (Debian's
# `chromium` package; .ci/run installs it when missing, or set JISR_CHROMIUM)
# driven by chromedp (cmd/internal/browsertest). Behind the build tag
# `browser` so that `make test` needs no browser.

VET_TAGS += browser

.PHONY: test-browser

test-browser: ## The citizen's journey in headless Chromium, French and Arabic (tag browser; screenshots in var/screenshots)
	cd cmd && $(GO) test -tags browser -count=1 -timeout 10m -run '^TestCitizenJourneyInTheBrowser$$' ./jisr/
