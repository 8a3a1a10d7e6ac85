// Command notifier runs Flotilla's notifier service on its own:
//
//	go run ./services/notifier --brokers 127.0.0.1:9092
package main

import "github.com/flotilla-fleet/flotilla/internal/servicecmd"

func main() { servicecmd.Main(servicecmd.Notifier()) }
