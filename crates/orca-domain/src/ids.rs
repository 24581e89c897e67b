//! Validated identifiers and stream names.

use std::fmt;

use uuid::Uuid;

use crate::rejection::{Code, FieldError, Rejection};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses `text` as a UUID; `field` names the input in the rejection.
            pub fn parse(field: &str, text: &str) -> Result<Self, Rejection> {
                Uuid::parse_str(text.trim()).map(Self).map_err(|_| {
                    Rejection::fields(
                        Code::InvalidArgument,
                        format!("{field} must be a UUID, got {text:?}"),
                        vec![FieldError::new(field, "not a valid UUID")],
                    )
                })
            }

            /// The log stream holding this aggregate's events.
            pub fn stream(&self) -> String {
                format!(concat!($prefix, "-{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies a subscription.
    SubscriptionId,
    "subscription"
);
uuid_id!(
    /// Identifies a process (one workflow run).
    ProcessId,
    "process"
);
uuid_id!(
    /// Identifies a business transaction.
    TransactionId,
    "transaction"
);
uuid_id!(
    /// Identifies an order of items.
    OrderId,
    "order"
);
uuid_id!(
    /// Identifies a customer; orca keeps no customer records, only the id.
    CustomerId,
    "customer"
);

/// Splits a stream name into aggregate type and id: `process-<uuid>` → (`process`, `<uuid>`).
pub fn split_stream(stream: &str) -> Option<(&str, &str)> {
    stream.split_once('-')
}
