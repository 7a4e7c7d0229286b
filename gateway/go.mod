module github.com/jisr-bus/jisr/gateway

go 1.26
