// Package cluster holds the cluster fault run (`make test-cluster`): three retryhub-server
// processes share one MariaDB database through a TCP proxy the test owns, and one SDK client
// process (clusterclient) with a disk spool makes 20,000 calls that fail twice and then succeed.
// During the run one server is killed with SIGKILL, the servers are cut off the database for
// 20 s, and the client is killed with SIGKILL and restarted on the same spool. At the end every
// task must have succeeded, none be missing, and the killed server's buckets must have moved
// to the survivors within the documented time; duplicate executions are counted and printed.
//
// The run needs MariaDB on 127.0.0.1:3306 (RETRYHUB_TEST_MYSQL_DSN points elsewhere) and runs
// only with RETRYHUB_TEST_CLUSTER=1, so `make test` leaves it out. RETRYHUB_TEST_CLUSTER_LOGS=dir
// keeps the processes' logs, the spool and the execution log in a new directory under dir.
package cluster
