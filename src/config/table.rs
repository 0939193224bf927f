//! A settings table declared once: [`table!`] turns one line per key (doc,
//! TOML key, typed field, rule) into the typed struct the daemon reads, the
//! fragment struct a file is read into (every key optional, unknown keys
//! refused, file and line kept), the validation, and the dump.
//!
//! The defaults stay in `config/defaults.toml` and the description in
//! `docs/configuration.md`: a key of such a table costs three places.

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Check;
use crate::config::fragments::{Node, Val};

/// A typed setting and the TOML value a file writes for it.
pub(crate) trait ConfigValue {
    /// The value as written.
    type Raw: Serialize + DeserializeOwned + Node + Clone + std::fmt::Debug;
    /// Back to the value as written (for the dump).
    fn raw(&self) -> Self::Raw;
}

impl ConfigValue for bool {
    type Raw = bool;
    fn raw(&self) -> bool {
        *self
    }
}

impl ConfigValue for u8 {
    type Raw = u64;
    fn raw(&self) -> u64 {
        u64::from(*self)
    }
}

impl ConfigValue for u32 {
    type Raw = u64;
    fn raw(&self) -> u64 {
        u64::from(*self)
    }
}

impl ConfigValue for String {
    type Raw = String;
    fn raw(&self) -> String {
        self.clone()
    }
}

/// Durations are written as whole milliseconds (`*_ms` keys).
impl ConfigValue for Duration {
    type Raw = u64;
    fn raw(&self) -> u64 {
        u64::try_from(self.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The rule of a whole-number key: within `range`, which also keeps it
/// within the field's type.
pub(crate) fn int<T: TryFrom<u64> + Default>(
    range: RangeInclusive<u64>,
) -> impl Fn(&mut Check, &str, &Option<Val<u64>>) -> T {
    move |c, key, v| T::try_from(c.int(key, v, range.clone())).unwrap_or_default()
}

/// Declares a settings table; see the module documentation and the
/// "Adding a configuration key" section of `docs/architecture.md`.
///
/// Each key is `toml_key => field: Type = rule,` where `rule` is any
/// `fn(&mut Check, dotted_key, &Option<Val<Raw>>) -> Type`, e.g.
/// `Check::millis`, `Check::bool` or `int(0..=100)`.
macro_rules! table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $frag:ident at $prefix:literal {
            $(
                $(#[doc = $doc:literal])*
                $key:ident => $field:ident : $ty:ty = $rule:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        #[doc = concat!("`[", $prefix, "]` as written in one file.")]
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct $frag {
            $(
                pub $key: Option<
                    $crate::config::fragments::Val<<$ty as $crate::config::settings::table::ConfigValue>::Raw>,
                >,
            )*
        }

        impl $crate::config::fragments::Node for $frag {
            fn merge(&mut self, later: Self) {
                $($crate::config::fragments::Node::merge(&mut self.$key, later.$key);)*
            }
            fn stamp(&mut self, source: &$crate::config::fragments::Source<'_>) {
                $($crate::config::fragments::Node::stamp(&mut self.$key, source);)*
            }
        }

        impl $name {
            /// Validates the merged table; errors go to `c`.
            fn check(c: &mut Check, f: &$frag) -> Self {
                $name {
                    $($field: ($rule)(c, concat!($prefix, ".", stringify!($key)), &f.$key),)*
                }
            }
        }

        /// The table as written: each key in the unit its file uses.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                use $crate::config::settings::table::ConfigValue as _;
                let mut map = s.serialize_map(None)?;
                $(map.serialize_entry(stringify!($key), &self.$field.raw())?;)*
                map.end()
            }
        }
    };
}
