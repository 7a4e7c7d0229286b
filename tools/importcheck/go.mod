module github.com/jisr-bus/jisr/tools/importcheck

go 1.26.0
