module github.com/jisr-bus/jisr/certs

go 1.26
