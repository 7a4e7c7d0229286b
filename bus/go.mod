module github.com/jisr-bus/jisr/bus

go 1.26
