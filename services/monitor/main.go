// Command monitor runs Flotilla's monitor service on its own:
//
//	go run ./services/monitor --brokers 127.0.0.1:9092
package main

import "github.com/flotilla-fleet/flotilla/internal/servicecmd"

func main() { servicecmd.Main(servicecmd.Monitor()) }
