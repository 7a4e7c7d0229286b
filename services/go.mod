module github.com/jisr-bus/jisr/services

go 1.26
