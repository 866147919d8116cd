//! A streamed answer on its way: what a host does with each piece of the
//! upstream's body ([`Step::Stream`]). Every piece is noted for what the
//! exchange reads once the stream is over (the token usage, the answer's
//! first bytes), and goes to the client as it is, or translated into the
//! client's API ([`crate::translate`]) when Google does not speak it.
//!
//! [`Step::Stream`]: super::Step::Stream

use crate::google::stream::{Seen, UsageTail};
use crate::translate::Streamer;
use crate::translate::recall::Watch;
use std::borrow::Cow;

/// What passes from the upstream to the client of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipe {
    tail: UsageTail,
    translate: Option<Streamer>,
    watch: Option<Box<Watch>>,
}

impl Pipe {
    /// The answer passes as it is; its first `head` bytes are kept
    /// ([`UsageTail::keeping_head`]).
    pub fn relay(head: usize) -> Self {
        Self { tail: UsageTail::keeping_head(head), translate: None, watch: None }
    }

    /// The answer is translated by `streamer`.
    pub fn translating(streamer: Streamer) -> Self {
        Self { tail: UsageTail::new(), translate: Some(streamer), watch: None }
    }

    /// The answer (a chat completion, streamed or not) is also read for
    /// the thought signatures of its tool calls ([`Watch`]).
    pub fn watching(mut self, stream: bool) -> Self {
        self.watch = Some(Box::new(Watch::new(stream)));
        self
    }

    /// Whether the bytes change on the way (so a host cannot hand the
    /// upstream body to the client as it is).
    pub fn translates(&self) -> bool {
        self.translate.is_some()
    }

    /// What reads the answer for its tool calls' signatures, if it is
    /// read so: a host that lets the runtime pipe the body natively (its
    /// bytes unchanged) hands it the whole body once it is over, and puts
    /// what it found in [`Seen::signatures`].
    pub fn watch(&self) -> Option<Watch> {
        self.watch.as_deref().cloned()
    }

    /// How many of the answer's first bytes are kept.
    pub fn head_limit(&self) -> usize {
        self.tail.head_limit()
    }

    /// Notes a piece of the upstream body; returns what the client gets of
    /// it (maybe nothing yet: an event's unfinished start).
    pub fn push<'a>(&mut self, piece: &'a [u8]) -> Cow<'a, [u8]> {
        self.tail.push(piece);
        if let Some(w) = &mut self.watch {
            w.push(piece);
        }
        match &mut self.translate {
            None => Cow::Borrowed(piece),
            Some(t) => {
                let mut out = Vec::new();
                t.push(piece, &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// The upstream body ended cleanly: the last bytes for the client.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(t) = &mut self.translate {
            t.finish(&mut out);
        }
        out
    }

    /// The upstream body broke off: the bytes that tell the client so (a
    /// translated API's error event), after which the host ends the
    /// client's answer broken.
    pub fn broke(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(t) = &mut self.translate {
            t.broke(&mut out);
        }
        out
    }

    /// What was seen of the answer, for [`super::Event::Streamed`].
    pub fn seen(self) -> Seen {
        let mut seen = self.tail.seen();
        if let Some(w) = self.watch {
            seen.signatures = w.found();
        }
        seen
    }
}
