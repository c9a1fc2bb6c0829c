//! Test harness: upstream servers, gateways from config strings, clients.
