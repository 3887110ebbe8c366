module github.com/retryhub/retryhub/examples

go 1.26.0

require github.com/retryhub/retryhub/client-sdk v0.0.0

replace github.com/retryhub/retryhub/client-sdk => ../client-sdk
