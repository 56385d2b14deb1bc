# An SSE back end announced to ssemesh through Consul: a CUE Content Store's
# change log on 10.0.1.20:8080. backend.json describes the same service in
# JSON; load either one on the Consul agent of the back end's host:
#
#   consul services register backend.hcl
#
# or copy it into the agent's configuration directory. ssemesh nodes mount
# every service that carries the "ssemesh" tag (mesh.consul.tag) and that
# passes its health check; the service name is the back end's name, which a
# node's backends entry uses to add headers and credentials (Consul carries
# no secrets for ssemesh).
service {
  id      = "changelog-1"
  name    = "changelog"
  address = "10.0.1.20"
  port    = 8080
  tags    = ["ssemesh"]

  meta = {
    # Upstream path on address:port: what a root node requests.
    "ssemesh-path" = "/webservice/escenic/changelog/sse"
    # Client-facing path on every node; defaults to ssemesh-path. Keeping
    # the Content Store's own path means clients change only the host of
    # their sseEndpoint.
    "ssemesh-mount" = "/webservice/escenic/changelog/sse"
    # "true" would serve every path below the mount as a stream of its own.
    "ssemesh-prefix" = "false"
    # "http" or "https".
    "ssemesh-scheme" = "http"
  }

  # Only passing instances are used. The check must call a URL that answers
  # and ends: the SSE path itself never ends, so Consul's check would time
  # out and keep the instance critical.
  check {
    name     = "changelog HTTP"
    http     = "http://10.0.1.20:8080/health"
    method   = "GET"
    interval = "10s"
    timeout  = "5s"
  }
}
