// Command planner runs Flotilla's planner service on its own:
//
//	go run ./services/planner --brokers 127.0.0.1:9092
package main

import "github.com/flotilla-fleet/flotilla/internal/servicecmd"

func main() { servicecmd.Main(servicecmd.Planner()) }
