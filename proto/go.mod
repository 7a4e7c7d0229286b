module github.com/jisr-bus/jisr/proto

go 1.26
