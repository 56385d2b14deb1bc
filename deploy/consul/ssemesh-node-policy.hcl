# ACL policy for ssemesh nodes. Create it once per cluster and give every
# node a token linked to it (mesh.consul.token):
#
#   consul acl policy create -name ssemesh-node -rules @ssemesh-node-policy.hcl
#   consul acl token create -description "ssemesh nodes" -policy-name ssemesh-node
#
# A node calls only these endpoints: /v1/catalog/services and
# /v1/health/service/<name> (blocking queries, its own and every other data
# centre), /v1/catalog/datacenters (no rule needed), and
# /v1/agent/service/<id>, /v1/agent/service/register and
# /v1/agent/service/deregister/<id> for its own registration. It needs no
# key/value, session, event, keyring, agent, acl or operator rights.

# Back ends are whatever services carry the ssemesh tag, under any name:
# the catalog's service list and the health of each back end are filtered
# to the services the token may read. The same rule lets a node read its
# peers (service "ssemesh") and its own registration on the agent.
service_prefix "" {
  policy = "read"
}

# Health answers list an instance only when the token may also read the
# Consul node it runs on; without this every back end and peer looks absent.
node_prefix "" {
  policy = "read"
}

# Each node registers itself, with its /readyz check, under the service
# name "ssemesh", and deregisters when it shuts down. The exact name, not a
# prefix: a node must not be able to register a back end (such as
# "ssemesh-changelog") and so choose where other nodes connect.
service "ssemesh" {
  policy = "write"
}
