// Command executor runs Flotilla's executor service on its own:
//
//	go run ./services/executor --brokers 127.0.0.1:9092
package main

import "github.com/flotilla-fleet/flotilla/internal/servicecmd"

func main() { servicecmd.Main(servicecmd.Executor()) }
