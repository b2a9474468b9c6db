//! Progress of a batch command: a bar on a terminal, periodic plain lines otherwise.
