package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
)

// TopicOrderCreated is the topic of the "order created" messages.
const TopicOrderCreated = "orders.created"

// Message is one message published to the broker.
type Message struct {
	// ID identifies the message; the broker keeps one copy per ID, so a message sent again
	// after a lost acknowledgement is not delivered twice.
	ID    string          `json:"id"`
	Topic string          `json:"topic"`
	Body  json.RawMessage `json:"body"`
}

// The broker's transient failures.
var (
	// ErrBrokerUnavailable says the broker refused the message; it was not stored.
	ErrBrokerUnavailable = errors.New("broker unavailable")
	// ErrAckLost says the broker stored the message but its acknowledgement never came back, as
	// when a publish times out after the write: the publisher cannot tell, and must send again.
	ErrAckLost = errors.New("broker acknowledgement lost")
)

// Broker is an in-process stand-in for a message broker that fails a fraction of publishes,
// half of them before storing the message (ErrBrokerUnavailable) and half after
// (ErrAckLost). It keeps one copy per message ID and counts the copies it dropped. It is safe
// for concurrent use.
type Broker struct {
	failRate float64

	mu         sync.Mutex
	messages   map[string]Message
	duplicates int
}

// NewBroker returns a broker that fails the fraction failRate (0 to 1) of publishes.
func NewBroker(failRate float64) *Broker {
	return &Broker{failRate: failRate, messages: make(map[string]Message)}
}

// Publish stores m, unless it fails. It honours ctx.
func (b *Broker) Publish(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("publish %s: %w", m.ID, err)
	}
	if m.ID == "" || m.Topic == "" {
		return fmt.Errorf("publish: a message needs an ID and a topic")
	}
	roll := rand.Float64()
	if roll < b.failRate/2 {
		return fmt.Errorf("publish %s: %w", m.ID, ErrBrokerUnavailable)
	}
	b.mu.Lock()
	if _, dup := b.messages[m.ID]; dup {
		b.duplicates++
	} else {
		b.messages[m.ID] = m
	}
	b.mu.Unlock()
	if roll < b.failRate {
		return fmt.Errorf("publish %s: %w", m.ID, ErrAckLost)
	}
	return nil
}

// BrokerStats are what the broker holds.
type BrokerStats struct {
	// Messages counts the messages stored, one per ID.
	Messages int
	// Duplicates counts the copies of stored messages that were sent again and dropped.
	Duplicates int
}

// Stats returns what the broker holds.
func (b *Broker) Stats() BrokerStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BrokerStats{Messages: len(b.messages), Duplicates: b.duplicates}
}

// Message returns the stored message with that ID.
func (b *Broker) Message(id string) (Message, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m, ok := b.messages[id]
	return m, ok
}
