//! Hub and coordination events into a stream actor's mailbox: the hub's `Sink` and the
//! coordinators' `CoordSink` for any stream actor (WebSocket session, SSE stream). The mailbox
//! is bounded (`stream.max_outbound_messages`); when it is full the actor is told `Overflow`
//! instead, and ends the stream as a slow consumer.

use std::sync::Arc;

use actix::prelude::*;
use ruvector_actors::{CoordSink, Delivery, Sink};

/// A subscription event for a stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push(pub Delivery);

/// A coordination event for a stream (`agent_joined`, `agent_left`, a topic `message`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CoordEvent {
    pub kind: &'static str,
    /// The event's JSON text, shared with every other stream it goes to.
    pub frame: Arc<str>,
}

/// The stream's mailbox was full when the hub had an event for it: slow consumer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Overflow;

/// Delivers hub events to a stream actor.
pub struct ActorSink<A: Actor>(pub Addr<A>);

impl<A> Sink for ActorSink<A>
where
    A: Actor<Context = Context<A>> + Handler<Push> + Handler<Overflow>,
{
    fn deliver(&self, d: Delivery) -> bool {
        match self.0.try_send(Push(d)) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.0.do_send(Overflow);
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }
}

impl<A> CoordSink for ActorSink<A>
where
    A: Actor<Context = Context<A>> + Handler<CoordEvent> + Handler<Overflow>,
{
    fn deliver(&self, kind: &'static str, frame: &Arc<str>) -> bool {
        let event = CoordEvent {
            kind,
            frame: frame.clone(),
        };
        match self.0.try_send(event) {
            Ok(()) => true,
            Err(SendError::Full(_)) => {
                self.0.do_send(Overflow);
                false
            }
            Err(SendError::Closed(_)) => false,
        }
    }
}
