package main
import (
 _ "github.com/gorilla/mux"
 _ "github.com/hashicorp/consul/api"
 _ "github.com/hashicorp/memberlist"
 _ "github.com/hashicorp/go-retryablehttp"
 _ "github.com/sirupsen/logrus"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/prometheus/common/expfmt"
 _ "go.yaml.in/yaml/v3"
)
func main(){}
