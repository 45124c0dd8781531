// Package monitoring holds podns's shipped Prometheus Operator resources and Grafana dashboard;
// its tests check them with Prometheus's own parsers and query engine.
package monitoring
