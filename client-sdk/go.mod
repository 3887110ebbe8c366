module github.com/retryhub/retryhub/client-sdk

go 1.26.0

require github.com/robfig/cron/v3 v3.0.1

require go.uber.org/goleak v1.3.0
