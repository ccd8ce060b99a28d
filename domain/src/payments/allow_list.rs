//! The payee allow-list: state rebuilt from payee events, and the rules for
//! changing it.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use super::bsb::{AccountNumber, Bsb, BsbError};
use super::iban::{Iban, IbanError};
use super::names::{lookalike_key, normalize_name};
use crate::events::{DomainEvent, PayeeAccount, PayeeAdded, PayeeRemoved};
use crate::operator_events::ChangeApproved;

/// Maximum length of a payee name in characters, after normalisation.
///
/// 70 is the creditor name limit of SEPA credit transfers; ABA files truncate
/// further when they are written.
pub const MAX_NAME_CHARS: usize = 70;

/// Maximum length of a removal reason in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A payee on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payee {
    /// Payee id.
    pub payee_id: Uuid,
    /// Name as given.
    pub name: String,
    /// Name after [`normalize_name`].
    pub normalized_name: String,
    /// Key from [`lookalike_key`].
    pub lookalike_key: String,
    /// Bank account in canonical form.
    pub account: PayeeAccount,
    /// End of the payee's cooling-off period, microseconds since the Unix epoch; `None`
    /// for a payee added before approvals existed, which is payable at once.
    pub payable_from_micros: Option<i64>,
}

/// Allow-list of active payees, rebuilt by applying payee events in order.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    // A BTreeMap so that look-alike matches come out in id order, which keeps the
    // `lookalike_of` field of a new event independent of insertion history.
    payees: BTreeMap<Uuid, Payee>,
    by_account: HashMap<PayeeAccount, Uuid>,
}

/// A change to the allow-list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllowListError {
    /// The name is empty after normalisation.
    #[error("payee name {name:?} is empty after removing spaces and hidden characters")]
    NameEmpty {
        /// Name as given.
        name: String,
    },
    /// The name is longer than [`MAX_NAME_CHARS`].
    #[error("payee name has {chars} characters after normalisation; the maximum is {max}")]
    NameTooLong {
        /// Characters after normalisation.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// The BSB or account number is invalid.
    #[error(transparent)]
    InvalidBsbAccount(#[from] BsbError),
    /// The IBAN is invalid.
    #[error(transparent)]
    InvalidIban(#[from] IbanError),
    /// An active payee already has this account.
    #[error(
        "account {account} already belongs to active payee {existing}; remove that payee first"
    )]
    DuplicateAccount {
        /// The account, as printed for people.
        account: String,
        /// Payee that has it.
        existing: Uuid,
    },
    /// The payee id is already used by an active payee.
    #[error("payee id {payee_id} is already on the allow-list; allocate a new id")]
    DuplicatePayeeId {
        /// The id.
        payee_id: Uuid,
    },
    /// No active payee has this id.
    #[error("payee {payee_id} is not on the allow-list")]
    PayeeNotFound {
        /// The id.
        payee_id: Uuid,
    },
    /// The removal reason is empty or longer than [`MAX_REASON_CHARS`].
    #[error("removal reason must be 1 to {max} characters, got {chars}")]
    InvalidReason {
        /// Characters in the trimmed reason.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// The account is erased or sealed; a payee needs a real BSB account or IBAN.
    #[error("payee account is {why}; give a BSB and account number or an IBAN")]
    AccountUnavailable {
        /// `[erased]` or `[encrypted]`.
        why: String,
    },
}

impl AllowListError {
    /// Returns the stable snake_case code of the rejection, as the API returns it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NameEmpty { .. } => "payee_name_empty",
            Self::NameTooLong { .. } => "payee_name_too_long",
            Self::InvalidBsbAccount(_) => "payee_account_invalid",
            Self::InvalidIban(_) => "payee_iban_invalid",
            Self::DuplicateAccount { .. } => "payee_account_duplicate",
            Self::DuplicatePayeeId { .. } => "payee_id_duplicate",
            Self::PayeeNotFound { .. } => "payee_not_found",
            Self::InvalidReason { .. } => "removal_reason_invalid",
            Self::AccountUnavailable { .. } => "payee_account_unavailable",
        }
    }
}

/// Returns a BSB account with the leading zeros of its number dropped; `None` for an IBAN.
fn account_lookalike_key(account: &PayeeAccount) -> Option<(String, String)> {
    match account {
        PayeeAccount::Bsb { bsb, account } => {
            let digits = account.trim_start_matches('0');
            Some((bsb.clone(), digits.to_owned()))
        }
        PayeeAccount::Iban { .. } | PayeeAccount::Unavailable { .. } => None,
    }
}

/// A stored payee event contradicts the allow-list rebuilt so far.
///
/// The rules above never produce such an event, so this means the history was
/// written by other code or has been altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A `payee.added` event reuses the id of an active payee.
    #[error("payee.added for {payee_id}, which is already active")]
    AlreadyActive {
        /// The id.
        payee_id: Uuid,
    },
    /// A `payee.added` event reuses the account of an active payee.
    #[error("payee.added for {payee_id} reuses the account of active payee {existing}")]
    AccountInUse {
        /// The new payee.
        payee_id: Uuid,
        /// The active payee with the same account.
        existing: Uuid,
    },
    /// A `payee.removed` event names a payee that is not active.
    #[error("payee.removed for {payee_id}, which is not active")]
    NotActive {
        /// The id.
        payee_id: Uuid,
    },
    /// An `allowlist.change_approved` event names a payee that its append did not add.
    #[error("allowlist.change_approved names payee {payee_id}, which is not active")]
    ApprovedNotActive {
        /// The id.
        payee_id: Uuid,
    },
}

impl AllowList {
    /// Creates an empty allow-list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; events other than payee events are ignored.
    ///
    /// # Errors
    /// A [`ReplayError`] if the event contradicts the state so far. The state is
    /// left unchanged in that case.
    pub fn apply(&mut self, event: &DomainEvent) -> Result<(), ReplayError> {
        match event {
            DomainEvent::PayeeAdded(added) => self.apply_added(added),
            DomainEvent::PayeeRemoved(removed) => self.apply_removed(removed),
            DomainEvent::ChangeApproved(approved) => self.apply_approved(approved),
            _ => Ok(()),
        }
    }

    fn apply_added(&mut self, added: &PayeeAdded) -> Result<(), ReplayError> {
        let payee_id = added.payee_id;
        if self.payees.contains_key(&payee_id) {
            return Err(ReplayError::AlreadyActive { payee_id });
        }
        if let Some(existing) = self.by_account.get(&added.account) {
            return Err(ReplayError::AccountInUse {
                payee_id,
                existing: *existing,
            });
        }

        let payee = Payee {
            payee_id,
            name: added.name.clone(),
            normalized_name: added.normalized_name.clone(),
            lookalike_key: lookalike_key(&added.name),
            account: added.account.clone(),
            payable_from_micros: None,
        };
        self.by_account.insert(payee.account.clone(), payee_id);
        self.payees.insert(payee_id, payee);
        self.assert_indexes_agree();
        Ok(())
    }

    /// Starts the cooling-off period of the payee an approved change added; the
    /// approval follows the `payee.added` event in the same append.
    fn apply_approved(&mut self, approved: &ChangeApproved) -> Result<(), ReplayError> {
        let Some(payee_id) = approved.payee_id else {
            return Ok(());
        };
        let payee = self
            .payees
            .get_mut(&payee_id)
            .ok_or(ReplayError::ApprovedNotActive { payee_id })?;
        payee.payable_from_micros = Some(approved.payable_from_micros);
        Ok(())
    }

    fn apply_removed(&mut self, removed: &PayeeRemoved) -> Result<(), ReplayError> {
        let payee_id = removed.payee_id;
        let payee = self
            .payees
            .remove(&payee_id)
            .ok_or(ReplayError::NotActive { payee_id })?;
        let indexed = self.by_account.remove(&payee.account);
        assert_eq!(
            indexed,
            Some(payee_id),
            "account index out of step with payees"
        );
        self.assert_indexes_agree();
        Ok(())
    }

    /// Checks a new payee and returns the event that adds it.
    ///
    /// The account is checked and stored in canonical form (BSB digits with no
    /// dash, IBAN upper case with no spaces), so two spellings of one account are
    /// duplicates. Names that look like an active payee's are flagged in
    /// `lookalike_of`, not rejected: an operator reviews them.
    ///
    /// # Errors
    /// An [`AllowListError`] for an empty or long name, an invalid account, an
    /// account already active, or a payee id already active.
    pub fn propose_add(
        &self,
        payee_id: Uuid,
        name: &str,
        account: &PayeeAccount,
    ) -> Result<PayeeAdded, AllowListError> {
        let normalized_name = check_name(name)?;
        let account = canonical_account(account)?;
        if self.payees.contains_key(&payee_id) {
            return Err(AllowListError::DuplicatePayeeId { payee_id });
        }
        if let Some(existing) = self.find_by_account(&account) {
            let account = display_account(&account);
            return Err(AllowListError::DuplicateAccount {
                account,
                existing: existing.payee_id,
            });
        }

        // Look-alikes: names with the same skeleton, and BSB accounts that differ only in
        // leading zeros (000123 and 123 at one BSB), which some banks treat as one account.
        let key = lookalike_key(name);
        let account_key = account_lookalike_key(&account);
        let lookalike_of = self
            .payees
            .values()
            .filter(|p| {
                p.lookalike_key == key
                    || (account_key.is_some() && account_lookalike_key(&p.account) == account_key)
            })
            .map(|p| p.payee_id)
            .collect();
        Ok(PayeeAdded {
            payee_id,
            name: name.to_owned(),
            normalized_name,
            account,
            lookalike_of,
        })
    }

    /// Checks a removal and returns the event that removes the payee.
    ///
    /// # Errors
    /// [`AllowListError::PayeeNotFound`] if the payee is not active,
    /// [`AllowListError::InvalidReason`] if the trimmed reason is empty or longer
    /// than [`MAX_REASON_CHARS`].
    pub fn remove(&self, payee_id: Uuid, reason: &str) -> Result<PayeeRemoved, AllowListError> {
        if !self.payees.contains_key(&payee_id) {
            return Err(AllowListError::PayeeNotFound { payee_id });
        }
        let reason = reason.trim();
        let chars = reason.chars().count();
        if chars == 0 || chars > MAX_REASON_CHARS {
            return Err(AllowListError::InvalidReason {
                chars,
                max: MAX_REASON_CHARS,
            });
        }
        Ok(PayeeRemoved {
            payee_id,
            reason: reason.to_owned(),
        })
    }

    /// Finds the active payee with this account, in any accepted spelling.
    pub fn find_by_account(&self, account: &PayeeAccount) -> Option<&Payee> {
        let canonical = canonical_account(account).ok()?;
        let payee_id = self.by_account.get(&canonical)?;
        self.payees.get(payee_id)
    }

    /// Returns the active payee with this id.
    pub fn get(&self, payee_id: Uuid) -> Option<&Payee> {
        self.payees.get(&payee_id)
    }

    /// Returns the number of active payees.
    pub fn len(&self) -> usize {
        self.payees.len()
    }

    /// Returns whether no payee is active.
    pub fn is_empty(&self) -> bool {
        self.payees.is_empty()
    }

    /// Iterates over active payees in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Payee> {
        self.payees.values()
    }

    fn assert_indexes_agree(&self) {
        assert_eq!(
            self.payees.len(),
            self.by_account.len(),
            "allow-list indexes disagree"
        );
    }
}

/// Validates an account and returns it in canonical form.
///
/// # Errors
/// [`AllowListError::InvalidBsbAccount`] or [`AllowListError::InvalidIban`].
pub fn canonical_account(account: &PayeeAccount) -> Result<PayeeAccount, AllowListError> {
    match account {
        PayeeAccount::Bsb { bsb, account } => {
            let bsb = Bsb::parse(bsb)?;
            let account = AccountNumber::parse(account)?;
            Ok(PayeeAccount::Bsb {
                bsb: bsb.digits().to_owned(),
                account: account.to_string(),
            })
        }
        PayeeAccount::Iban { iban } => {
            let iban = Iban::parse(iban)?;
            Ok(PayeeAccount::Iban {
                iban: iban.electronic().to_owned(),
            })
        }
        PayeeAccount::Unavailable { why, .. } => {
            Err(AllowListError::AccountUnavailable { why: why.clone() })
        }
    }
}

/// Prints an account for people: `123-456 000123` or an IBAN in groups of four.
fn display_account(account: &PayeeAccount) -> String {
    match account {
        PayeeAccount::Bsb { bsb, account } => {
            let bsb = Bsb::parse(bsb).map_or_else(|_| bsb.clone(), |b| b.to_string());
            format!("{bsb} {account}")
        }
        PayeeAccount::Iban { iban } => {
            Iban::parse(iban).map_or_else(|_| iban.clone(), |i| i.to_string())
        }
        PayeeAccount::Unavailable { why, .. } => why.clone(),
    }
}

fn check_name(name: &str) -> Result<String, AllowListError> {
    let normalized = normalize_name(name);
    let chars = normalized.chars().count();
    if chars == 0 {
        return Err(AllowListError::NameEmpty {
            name: name.to_owned(),
        });
    }
    if chars > MAX_NAME_CHARS {
        return Err(AllowListError::NameTooLong {
            chars,
            max: MAX_NAME_CHARS,
        });
    }
    Ok(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn bsb(bsb: &str, account: &str) -> PayeeAccount {
        PayeeAccount::Bsb {
            bsb: bsb.into(),
            account: account.into(),
        }
    }

    /// Proposes and applies an addition, as the command handler would.
    fn add(list: &mut AllowList, n: u128, name: &str, account: PayeeAccount) -> PayeeAdded {
        let added = list
            .propose_add(id(n), name, &account)
            .expect("valid payee");
        list.apply(&DomainEvent::PayeeAdded(added.clone()))
            .expect("replay of own event");
        added
    }

    #[test]
    fn propose_add_normalizes_and_canonicalizes() {
        let list = AllowList::new();
        let added = list
            .propose_add(id(1), "  ACME  Pty Ltd ", &bsb("012-003", "000123"))
            .unwrap();
        assert_eq!(added.payee_id, id(1));
        assert_eq!(added.name, "  ACME  Pty Ltd ");
        assert_eq!(added.normalized_name, "acme pty ltd");
        assert_eq!(added.account, bsb("012003", "000123"));
        assert!(added.lookalike_of.is_empty());
    }

    #[test]
    fn apply_then_get_and_find() {
        let mut list = AllowList::new();
        add(&mut list, 1, "Acme", bsb("123-456", "42"));
        assert_eq!(list.len(), 1);
        assert_eq!(
            list.get(id(1)).map(|p| p.normalized_name.as_str()),
            Some("acme")
        );
        // Either spelling of the BSB finds the payee.
        assert_eq!(
            list.find_by_account(&bsb("123456", "42"))
                .map(|p| p.payee_id),
            Some(id(1))
        );
        assert_eq!(
            list.find_by_account(&bsb("123-456", "42"))
                .map(|p| p.payee_id),
            Some(id(1))
        );
        assert!(list.find_by_account(&bsb("123-456", "042")).is_none());
        assert!(list.get(id(2)).is_none());
    }

    #[test]
    fn duplicate_account_rejected() {
        let mut list = AllowList::new();
        add(&mut list, 1, "Acme", bsb("123-456", "42"));
        let err = list
            .propose_add(id(2), "Other", &bsb("123456", "42"))
            .unwrap_err();
        let expected = AllowListError::DuplicateAccount {
            account: "123-456 42".into(),
            existing: id(1),
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn duplicate_iban_in_other_spelling_rejected() {
        let mut list = AllowList::new();
        let iban = PayeeAccount::Iban {
            iban: "DE89370400440532013000".into(),
        };
        add(&mut list, 1, "Müller GmbH", iban);
        let spaced = PayeeAccount::Iban {
            iban: "de89 3704 0044 0532 0130 00".into(),
        };
        let err = list.propose_add(id(2), "Other", &spaced).unwrap_err();
        assert!(
            matches!(err, AllowListError::DuplicateAccount { existing, .. } if existing == id(1))
        );
    }

    #[test]
    fn duplicate_payee_id_rejected() {
        let mut list = AllowList::new();
        add(&mut list, 1, "Acme", bsb("123-456", "42"));
        let err = list
            .propose_add(id(1), "Other", &bsb("123-456", "43"))
            .unwrap_err();
        assert_eq!(err, AllowListError::DuplicatePayeeId { payee_id: id(1) });
    }

    #[test]
    fn account_reusable_after_removal() {
        let mut list = AllowList::new();
        add(&mut list, 1, "Acme", bsb("123-456", "42"));
        let removed = list.remove(id(1), " closed ").unwrap();
        assert_eq!(
            removed,
            PayeeRemoved {
                payee_id: id(1),
                reason: "closed".into()
            }
        );
        list.apply(&DomainEvent::PayeeRemoved(removed)).unwrap();
        assert!(list.is_empty());
        assert!(list.find_by_account(&bsb("123-456", "42")).is_none());
        add(&mut list, 2, "Acme", bsb("123-456", "42"));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn leading_zero_accounts_flagged() {
        let mut list = AllowList::new();
        add(&mut list, 1, "Jane Citizen", bsb("012003", "000123"));
        let other = list
            .propose_add(id(2), "Acme Pty Ltd", &bsb("012-003", "123"))
            .unwrap();
        assert_eq!(other.lookalike_of, vec![id(1)]);
        let elsewhere = list
            .propose_add(id(3), "Acme Pty Ltd", &bsb("012-004", "123"))
            .unwrap();
        assert!(
            elsewhere.lookalike_of.is_empty(),
            "another BSB is another account"
        );
    }

    #[test]
    fn lookalikes_flagged_in_id_order() {
        let mut list = AllowList::new();
        add(&mut list, 3, "ACME Pty Ltd", bsb("123-456", "1"));
        add(&mut list, 1, "Acme Pty. Ltd", bsb("123-456", "2"));
        add(&mut list, 2, "Apex", bsb("123-456", "3"));
        let added = list
            .propose_add(id(9), "\u{391}cme pty ltd", &bsb("123-456", "4"))
            .unwrap();
        assert_eq!(added.lookalike_of, vec![id(1), id(3)]);
    }

    #[test]
    fn invalid_accounts_rejected() {
        let list = AllowList::new();
        let err = list
            .propose_add(id(1), "Acme", &bsb("12-3456", "42"))
            .unwrap_err();
        assert!(matches!(
            err,
            AllowListError::InvalidBsbAccount(BsbError::InvalidBsb { .. })
        ));
        let err = list
            .propose_add(id(1), "Acme", &bsb("123-456", "0000"))
            .unwrap_err();
        assert!(matches!(
            err,
            AllowListError::InvalidBsbAccount(BsbError::ZeroAccount { .. })
        ));
        let iban = PayeeAccount::Iban {
            iban: "DE89370400440532013001".into(),
        };
        let err = list.propose_add(id(1), "Acme", &iban).unwrap_err();
        assert!(matches!(
            err,
            AllowListError::InvalidIban(IbanError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn bad_names_rejected() {
        let list = AllowList::new();
        let account = bsb("123-456", "42");
        let err = list.propose_add(id(1), " \u{200B} ", &account).unwrap_err();
        assert!(matches!(err, AllowListError::NameEmpty { .. }));
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        let err = list.propose_add(id(1), &long, &account).unwrap_err();
        assert_eq!(
            err,
            AllowListError::NameTooLong {
                chars: 71,
                max: MAX_NAME_CHARS
            }
        );
        assert!(list
            .propose_add(id(1), &"a".repeat(MAX_NAME_CHARS), &account)
            .is_ok());
    }

    #[test]
    fn remove_checks_payee_and_reason() {
        let mut list = AllowList::new();
        assert_eq!(
            list.remove(id(1), "x"),
            Err(AllowListError::PayeeNotFound { payee_id: id(1) })
        );
        add(&mut list, 1, "Acme", bsb("123-456", "42"));
        let err = list.remove(id(1), "   ").unwrap_err();
        assert_eq!(
            err,
            AllowListError::InvalidReason {
                chars: 0,
                max: MAX_REASON_CHARS
            }
        );
        let long = "r".repeat(MAX_REASON_CHARS + 1);
        assert!(matches!(
            list.remove(id(1), &long),
            Err(AllowListError::InvalidReason { .. })
        ));
    }

    #[test]
    fn replay_rejects_contradictions() {
        let mut list = AllowList::new();
        let added = add(&mut list, 1, "Acme", bsb("123-456", "42"));
        let again = DomainEvent::PayeeAdded(added.clone());
        assert_eq!(
            list.apply(&again),
            Err(ReplayError::AlreadyActive { payee_id: id(1) })
        );

        let same_account = PayeeAdded {
            payee_id: id(2),
            ..added
        };
        let err = list
            .apply(&DomainEvent::PayeeAdded(same_account))
            .unwrap_err();
        assert_eq!(
            err,
            ReplayError::AccountInUse {
                payee_id: id(2),
                existing: id(1)
            }
        );

        let unknown = PayeeRemoved {
            payee_id: id(7),
            reason: "gone".into(),
        };
        let err = list.apply(&DomainEvent::PayeeRemoved(unknown)).unwrap_err();
        assert_eq!(err, ReplayError::NotActive { payee_id: id(7) });
        assert_eq!(list.len(), 1);
    }
}
