# The auditor's console in a real browser: headless Chromium through chromedp
# (build tag browser), the auditor's client certificate in the browser
# profile's NSS database, chosen by the AutoSelectCertificateForUrls policy
# that the test writes to /etc/chromium/policies/managed (root). Screenshots
# of each step go to var/screenshots/console-*.png.

VET_TAGS += browser

.PHONY: test-console

test-console: ## The auditor's console in headless Chromium (mTLS client certificate, and OIDC with the role; needs root, chromium, libnss3-tools, openssl)
	cd cmd && JISR_SCREENSHOTS=$(CURDIR)/var/screenshots $(GO) test -tags browser -count=1 -timeout 10m -run '^(TestConsoleInTheBrowser|TestConsoleOIDCInTheBrowser)$$' ./jisr
