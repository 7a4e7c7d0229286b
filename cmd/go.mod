module github.com/jisr-bus/jisr/cmd

go 1.26
