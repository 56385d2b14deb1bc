package node

import "github.com/gorilla/mux"

func (n *Node) operatorRoutes(root, api *mux.Router) {}
