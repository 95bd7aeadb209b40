package commands

import (
	"time"

	"github.com/arqonbus/arqonbus/codec"
)

func statusCommand() *Command {
	return &Command{
		Name:        "status",
		Description: "The bus's state: clients by type, rooms, channels_total, the 100 channels with the most members (list_channels pages through a room's), messages in and out with rates, uptime, storage, memory_bytes and goroutines.",
		Params:      map[string]string{},
		Run: func(d *Deps, _ Caller, _ *Request) ([]byte, *codec.Error) {
			return marshal(d.Status())
		},
	}
}

func pingCommand() *Command {
	return &Command{
		Name:        "ping",
		Description: "Answer pong with the server's time.",
		Params:      map[string]string{},
		Run: func(*Deps, Caller, *Request) ([]byte, *codec.Error) {
			out := []byte(`{"pong":true,"server_time":`)
			out = codec.AppendTimestamp(out, time.Now())
			return append(out, '}'), nil
		},
	}
}

func helpCommand(set *Set) *Command {
	return &Command{
		Name:        "help",
		Description: "Every built-in command with its parameters.",
		Params:      map[string]string{},
		Run: func(*Deps, Caller, *Request) ([]byte, *codec.Error) {
			type entry struct {
				Name        string            `json:"name"`
				Description string            `json:"description"`
				Parameters  map[string]string `json:"parameters"`
				AdminOnly   bool              `json:"admin_only"`
			}
			list := make([]entry, 0, len(set.order))
			for _, c := range set.order {
				list = append(list, entry{c.Name, c.Description, c.Params, c.AdminOnly})
			}
			return marshal(struct {
				Commands []entry `json:"commands"`
			}{list})
		},
	}
}
