// Package deploy holds no code: its test checks the repository's docker-compose.yml and
// Dockerfile against the tree and the server's configuration, since no Docker engine runs the
// tests.
package deploy
