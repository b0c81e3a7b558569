module github.com/nvmepoll/nvmepoll

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/u-root/u-root v0.16.0
	golang.org/x/sys v0.49.0
)
