//! Tokens: how an event from the poller finds its way back to its owner.
//!
//! mio hands back, with each event, the [`Token`] given at registration. We put two
//! numbers in it: the slab key of the owner, and the owner's *generation*, a counter
//! stamped on every slot when it is filled. Slab keys are reused as soon as a slot is
//! freed, so an event queued for a connection that has since closed could otherwise be
//! delivered to an unrelated connection that now holds the same key. With the generation
//! in the token, such a *stale* event no longer matches the slot and is dropped.
//!
//! Layout (64-bit targets): the low 32 bits are the key, the high 32 bits the generation.
//! One value, `usize::MAX`, is reserved for the reactor's waker.

use mio::Token;

/// The token of the reactor's own waker (the cross-thread handle).
pub const WAKER: Token = Token(usize::MAX);

const KEY_BITS: u32 = 32;
const KEY_MASK: usize = (1 << KEY_BITS) - 1;

/// The largest slab key a token can carry. The waker's token decodes to this key, so no
/// slot may ever use it.
pub const MAX_KEY: usize = KEY_MASK - 1;

/// What a token names: a slab slot and the generation that was current when it was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// The slab key.
    pub key: usize,
    /// The generation stamped on the slot when its owner was inserted.
    pub gen: u32,
}

const _: () = assert!(
    usize::BITS >= 64,
    "sockloop packs a 32-bit key and a 32-bit generation into a mio Token"
);

impl Tag {
    /// Packs this tag into a mio token.
    pub fn token(self) -> Token {
        debug_assert!(self.key <= MAX_KEY);
        Token(((self.gen as usize) << KEY_BITS) | self.key)
    }

    /// The public name of what this tag names (the same bits as its mio token).
    pub fn id(self) -> crate::proto::Token {
        crate::proto::Token(self.token().0 as u64)
    }

    /// Unpacks a public token made by [`Tag::id`].
    pub fn from_id(id: crate::proto::Token) -> Tag {
        Tag::from_token(Token(id.0 as usize))
    }

    /// Unpacks a token made by [`Tag::token`].
    pub fn from_token(token: Token) -> Tag {
        Tag {
            key: token.0 & KEY_MASK,
            gen: (token.0 >> KEY_BITS) as u32,
        }
    }
}

/// A token decoded once, at the top of dispatch, into what woke the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The waker: another thread posted work.
    Waker,
    /// A registered source, named by slot and generation (still to be checked against the
    /// slab: the slot may have been freed or reused since).
    Source(Tag),
}

impl Wake {
    /// Decodes a token.
    pub fn from_token(token: Token) -> Wake {
        if token == WAKER {
            Wake::Waker
        } else {
            Wake::Source(Tag::from_token(token))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_waker_is_distinct() {
        for (key, gen) in [(0, 0), (1, 1), (MAX_KEY, u32::MAX), (12345, 7)] {
            let tag = Tag { key, gen };
            assert_eq!(Wake::from_token(tag.token()), Wake::Source(tag));
        }
        assert_eq!(Wake::from_token(WAKER), Wake::Waker);
    }

    #[test]
    fn same_key_other_generation_is_another_token() {
        let old = Tag { key: 3, gen: 1 };
        let new = Tag { key: 3, gen: 2 };
        assert_ne!(old.token(), new.token());
    }
}
