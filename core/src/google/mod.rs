//! Google's formats, read without I/O: what an upstream answer's error says
//! ([`errors`]), where the events of a streamed answer begin and end
//! ([`stream`]), and which resources a path, a body or an answer names
//! ([`names`]).

pub mod errors;
pub mod names;
pub mod stream;
