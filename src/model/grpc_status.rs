//! gRPC status codes by name, as a VirtualService's `fault.abort.grpcStatus` names them (istiod reads the names
//! of `google.rpc.Code`).

/// The 17 codes of `google.rpc.Code`, in code order.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `"UNAVAILABLE"` → 14. Names only, upper case, as istiod accepts them.
pub fn grpc_code(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::grpc_code;

    #[test]
    fn names_are_the_codes_of_google_rpc_code() {
        assert_eq!(grpc_code("OK"), Some(0));
        assert_eq!(grpc_code("DEADLINE_EXCEEDED"), Some(4));
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("UNAUTHENTICATED"), Some(16));
        assert_eq!(grpc_code("unavailable"), None);
        assert_eq!(grpc_code("14"), None);
    }
}
