//! The health responder: `GET`/`HEAD /` answers 200 `wg0 up` only when the data plane really
//! works, else 503 with one line per failing condition.
