//! One test module per rule, with explicit numbers, and the daylight-saving days of
//! Sydney for the hour rule.

use chrono::NaiveDate;
use uuid::Uuid;

use super::*;
use crate::anomaly_events::{PaymentFlagged, PaymentReviewed, ReviewDecision};
use crate::events::PaymentSubmitted;
use crate::events::{DomainEvent, PayeeAccount, PayeeAdded, PayeeRemoved, PaymentSource};
use crate::operator_events::{AuthContext, ChangeApproved, ChangeProposed};
use crate::operators::AllowListChange;

const PAYEE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a01);
const OTHER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a02);
const REPLACEMENT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0a03);
const HOUR: i64 = 3_600 * 1_000_000;
const MINUTE: i64 = 60 * 1_000_000;

/// 2026-06-01T02:00:00Z, noon in Sydney (AEST, UTC+10): inside no quiet hours.
fn base() -> i64 {
    utc(2026, 6, 1, 2, 0)
}

fn utc(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> i64 {
    let date = NaiveDate::from_ymd_opt(year, month, day).expect("valid date");
    let time = date.and_hms_opt(hour, minute, 0).expect("valid time");
    time.and_utc().timestamp_micros()
}

fn bsb(account: &str) -> PayeeAccount {
    PayeeAccount::Bsb {
        bsb: "062000".into(),
        account: account.into(),
    }
}

fn auth() -> AuthContext {
    AuthContext {
        operator_id: Uuid::from_u128(7),
        session_id: Uuid::from_u128(8),
        factor: "totp".into(),
        factor_verified_at_micros: 0,
    }
}

/// Builds a history from events, each with its recording time.
#[derive(Default)]
struct Given {
    history: History,
    next: u64,
}

impl Given {
    fn event(mut self, at_micros: i64, event: DomainEvent) -> Self {
        self.history.apply(self.next, at_micros, &event);
        self.next += 1;
        self
    }

    fn payee(self, at_micros: i64, payee_id: Uuid, name: &str, account: &str) -> Self {
        let added = PayeeAdded {
            payee_id,
            name: name.into(),
            normalized_name: crate::payments::normalize_name(name),
            account: bsb(account),
            lookalike_of: Vec::new(),
        };
        self.event(at_micros, DomainEvent::PayeeAdded(added))
    }

    fn paid(self, at_micros: i64, payee_id: Uuid, amount_minor: u64) -> Self {
        let payment_id = Uuid::from_u128(u128::from(self.next) + 0x1000);
        self.paid_as(at_micros, payee_id, payment_id, amount_minor)
    }

    fn paid_as(self, at: i64, payee_id: Uuid, payment_id: Uuid, amount_minor: u64) -> Self {
        let submitted = PaymentSubmitted {
            payment_id,
            payee_id,
            amount_minor,
            currency: "AUD".into(),
            account: bsb("12345678"),
            payee_name: "Payee".into(),
            reference: String::new(),
            bank_idempotency_key: String::new(),
            source: PaymentSource::Api,
        };
        self.event(at, DomainEvent::PaymentSubmitted(submitted))
    }

    fn score(&self, payee_id: Uuid, amount_minor: u64, at_micros: i64) -> Vec<AnomalyFinding> {
        self.score_with(payee_id, amount_minor, at_micros, &AnomalyRules::default())
    }

    fn score_with(
        &self,
        payee_id: Uuid,
        amount_minor: u64,
        at_micros: i64,
        rules: &AnomalyRules,
    ) -> Vec<AnomalyFinding> {
        let candidate = Candidate {
            payment_id: Uuid::from_u128(0xffff),
            payee_id,
            amount_minor,
            currency: "AUD",
            at_micros,
        };
        score(&self.history, &candidate, rules)
    }
}

fn only<'a>(findings: &'a [AnomalyFinding], rule: &str) -> Option<&'a AnomalyFinding> {
    findings.iter().find(|finding| finding.rule == rule)
}

/// A payee added thirty days before [`base`] with four payments of AUD 80 to 120.
fn established() -> Given {
    let start = base() - 30 * 24 * HOUR;
    Given::default()
        .payee(start, PAYEE, "Acme Plumbing", "12345678")
        .paid(start + 24 * HOUR, PAYEE, 10_000)
        .paid(start + 48 * HOUR, PAYEE, 12_000)
        .paid(start + 72 * HOUR, PAYEE, 8_000)
        .paid(start + 96 * HOUR, PAYEE, 10_000)
}

mod amount_above_usual {
    use super::*;

    #[test]
    fn quotes_the_median_and_the_ratio() {
        let given = established();
        let findings = given.score(PAYEE, 125_000, base());
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(finding.rule, RULE_AMOUNT_ABOVE_USUAL);
        // Sorted 8,000 10,000 10,000 12,000: the median is (10,000 + 10,000) / 2.
        assert_eq!(finding.measure("median_minor"), Some(10_000));
        assert_eq!(finding.measure("ratio_hundredths"), Some(1_250));
        assert_eq!(finding.measure("payments_considered"), Some(4));
        assert_eq!(
            finding.explanation,
            "AUD 1,250.00 is 12.50 times this payee's median payment of AUD 100.00 over its \
             last 4 payments in AUD (the rule fires at 5.00 times)"
        );
    }

    #[test]
    fn stays_quiet_below_the_ratio() {
        // 499.99 / 100.00 = 4.99 times, under the default 5.
        assert!(established().score(PAYEE, 49_999, base()).is_empty());
        let at_threshold = established().score(PAYEE, 50_000, base());
        assert_eq!(at_threshold[0].measure("ratio_hundredths"), Some(500));
    }

    #[test]
    fn needs_enough_history() {
        let start = base() - 30 * 24 * HOUR;
        let given = Given::default()
            .payee(start, PAYEE, "Acme Plumbing", "12345678")
            .paid(start + HOUR, PAYEE, 100)
            .paid(start + 2 * HOUR, PAYEE, 100);
        let findings = given.score(PAYEE, 1_000_000, base());
        assert!(
            only(&findings, RULE_AMOUNT_ABOVE_USUAL).is_none(),
            "{findings:?}"
        );
    }

    #[test]
    fn odd_count_takes_the_middle_value() {
        let mut amounts = [300, 100, 200];
        assert_eq!(rules::median(&mut amounts), Some(200));
        let mut amounts = [1, 2];
        assert_eq!(rules::median(&mut amounts), Some(1));
        assert_eq!(rules::median(&mut []), None);
    }

    #[test]
    fn rejected_payments_do_not_count_as_usual() {
        let huge = Uuid::from_u128(0xbad);
        let start = base() - 10 * 24 * HOUR;
        let mut given = established().paid_as(start, PAYEE, huge, 1_000_000);
        let flagged = PaymentFlagged {
            payment_id: huge,
            payee_id: PAYEE,
            amount_minor: 1_000_000,
            currency: "AUD".into(),
            findings: Vec::new(),
            history_position: 0,
            evaluated_at_micros: start,
            time_zone: "UTC".into(),
        };
        given = given.event(start, DomainEvent::PaymentFlagged(flagged));
        // The held AUD 10,000.00 payment counts until a reviewer rejects it.
        let before = given.score(PAYEE, 125_000, base());
        assert_eq!(before[0].measure("payments_considered"), Some(5));
        let reviewed = PaymentReviewed {
            payment_id: huge,
            flag_event_id: Uuid::from_u128(1),
            decision: ReviewDecision::Reject,
            reason: "not ours".into(),
            auth: auth(),
        };
        given = given.event(start + HOUR, DomainEvent::PaymentReviewed(reviewed));
        let after = given.score(PAYEE, 125_000, base());
        assert_eq!(after[0].measure("payments_considered"), Some(4));
    }
}

mod first_payment_to_new_payee {
    use super::*;

    #[test]
    fn fires_for_a_payee_added_hours_ago() {
        let given = Given::default().payee(base() - 2 * HOUR, PAYEE, "Acme", "12345678");
        let findings = given.score(PAYEE, 10_000, base());
        let finding = only(&findings, RULE_NEW_PAYEE).expect("new payee finding");
        assert_eq!(finding.measure("payee_age_seconds"), Some(7_200));
        assert_eq!(finding.measure("threshold_seconds"), Some(604_800));
        assert_eq!(
            finding.explanation,
            format!(
                "first payment to payee {PAYEE}, which was added 2 hours ago (payees added \
                 less than 7 days ago are new)"
            )
        );
    }

    #[test]
    fn quiet_after_the_window_or_the_first_payment() {
        let old = Given::default().payee(base() - 8 * 24 * HOUR, PAYEE, "Acme", "12345678");
        assert!(old.score(PAYEE, 10_000, base()).is_empty());
        let paid = Given::default()
            .payee(base() - 2 * HOUR, PAYEE, "Acme", "12345678")
            .paid(base() - HOUR, PAYEE, 10_000);
        assert!(only(&paid.score(PAYEE, 10_000, base()), RULE_NEW_PAYEE).is_none());
    }
}

mod payee_account_changed_recently {
    use super::*;

    fn changed(at: i64, account: &str) -> Given {
        let proposal_id = Uuid::from_u128(0x9001);
        let change = AllowListChange::Change {
            payee_id: PAYEE,
            new_payee_id: REPLACEMENT,
            name: "Acme Plumbing".into(),
            account: bsb(account),
        };
        let proposed = ChangeProposed {
            proposal_id,
            revision: 1,
            change,
            content_hash: [0; 32],
            expires_at_micros: at + 24 * HOUR,
            auth: auth(),
        };
        let removed = PayeeRemoved {
            payee_id: PAYEE,
            reason: "replaced by an approved change".into(),
        };
        let approved = ChangeApproved {
            proposal_id,
            revision: 1,
            content_hash: [0; 32],
            payee_id: Some(REPLACEMENT),
            payable_from_micros: at,
            auth: auth(),
        };
        established()
            .event(at - HOUR, DomainEvent::ChangeProposed(proposed))
            .event(at, DomainEvent::PayeeRemoved(removed))
            .payee(at, REPLACEMENT, "Acme Plumbing", account)
            .event(at, DomainEvent::ChangeApproved(approved))
    }

    #[test]
    fn names_both_accounts_and_the_age() {
        let given = changed(base() - 5 * HOUR, "99887766");
        let findings = given.score(REPLACEMENT, 10_000, base());
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(finding.rule, RULE_ACCOUNT_CHANGED);
        assert_eq!(finding.measure("change_age_seconds"), Some(18_000));
        assert_eq!(
            finding.explanation,
            format!(
                "the bank account of payee {REPLACEMENT} changed 5 hours ago, from BSB 062-000 \
                 account ending 678 to BSB 062-000 account ending 766 (changes less than 3 \
                 days old are recent)"
            )
        );
    }

    #[test]
    fn history_follows_the_replacement() {
        // The old payee's four payments are the new id's usual amounts.
        let given = changed(base() - 4 * 24 * HOUR, "99887766");
        let findings = given.score(REPLACEMENT, 125_000, base());
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].measure("median_minor"), Some(10_000));
    }
}

mod unusual_hour {
    use super::*;

    fn hour_finding(at_micros: i64) -> Option<AnomalyFinding> {
        let given = established();
        let findings = given.score(PAYEE, 10_000, at_micros);
        only(&findings, RULE_UNUSUAL_HOUR).cloned()
    }

    #[test]
    fn quiet_hours_wrap_past_midnight() {
        assert!(rules::in_quiet_hours(23, 22, 6));
        assert!(rules::in_quiet_hours(0, 22, 6));
        assert!(rules::in_quiet_hours(5, 22, 6));
        assert!(!rules::in_quiet_hours(6, 22, 6));
        assert!(!rules::in_quiet_hours(21, 22, 6));
        assert!(rules::in_quiet_hours(1, 0, 5));
        assert!(!rules::in_quiet_hours(3, 4, 4));
    }

    #[test]
    fn standard_time_night() {
        // 2026-06-01T16:14Z is 02:14 on 2 June in Sydney (AEST, UTC+10).
        let finding = hour_finding(utc(2026, 6, 1, 16, 14)).expect("hour finding");
        assert_eq!(finding.measure("local_hour"), Some(2));
        assert_eq!(finding.measure("local_minute"), Some(14));
        assert_eq!(finding.measure("utc_offset_seconds"), Some(36_000));
        assert_eq!(
            finding.explanation,
            "submitted at 02:14 Australia/Sydney time (AEST, UTC+10:00), inside the quiet \
             hours 22:00 to 06:00"
        );
    }

    #[test]
    fn daylight_saving_starts() {
        // Sydney moves from 02:00 AEST to 03:00 AEDT at 2026-10-03T16:00Z (4 October).
        let before = hour_finding(utc(2026, 10, 3, 15, 30)).expect("01:30 AEST is quiet");
        assert_eq!(before.measure("local_hour"), Some(1));
        assert_eq!(before.measure("utc_offset_seconds"), Some(36_000));
        let after = hour_finding(utc(2026, 10, 3, 16, 30)).expect("03:30 AEDT is quiet");
        assert_eq!(after.measure("local_hour"), Some(3));
        assert_eq!(after.measure("utc_offset_seconds"), Some(39_600));
        assert!(
            after.explanation.contains("(AEDT, UTC+11:00)"),
            "{}",
            after.explanation
        );
        // 19:15Z that day is 06:15 AEDT, past the quiet hours; a fixed UTC+10 would
        // have read 05:15 and flagged it.
        assert_eq!(hour_finding(utc(2026, 10, 3, 19, 15)), None);
    }

    #[test]
    fn daylight_saving_ends() {
        // Sydney moves from 03:00 AEDT back to 02:00 AEST at 2026-04-04T16:00Z (5 April).
        // 19:30Z is then 05:30 AEST, still quiet; the summer offset would give 06:30.
        let finding = hour_finding(utc(2026, 4, 4, 19, 30)).expect("05:30 AEST is quiet");
        assert_eq!(finding.measure("local_hour"), Some(5));
        assert_eq!(finding.measure("utc_offset_seconds"), Some(36_000));
        // 02:30 local happens twice that night; both are quiet, with different offsets.
        let first = hour_finding(utc(2026, 4, 4, 15, 30)).expect("02:30 AEDT");
        let second = hour_finding(utc(2026, 4, 4, 16, 30)).expect("02:30 AEST");
        assert_eq!(first.measure("local_hour"), Some(2));
        assert_eq!(second.measure("local_hour"), Some(2));
        assert_eq!(first.measure("utc_offset_seconds"), Some(39_600));
        assert_eq!(second.measure("utc_offset_seconds"), Some(36_000));
    }

    #[test]
    fn zone_comes_from_configuration() {
        let rules = AnomalyRules {
            time_zone: parse_time_zone("Europe/London").expect("zone"),
            ..AnomalyRules::default()
        };
        // 02:00 UTC in June is 03:00 BST in London.
        let findings = established().score_with(PAYEE, 10_000, base(), &rules);
        let finding = only(&findings, RULE_UNUSUAL_HOUR).expect("hour finding");
        assert_eq!(finding.measure("local_hour"), Some(3));
        let error = parse_time_zone("Sydney").unwrap_err();
        assert!(
            error.contains("\"Sydney\"") && error.contains("Australia/Sydney"),
            "{error}"
        );
    }
}

mod many_payments_to_payee {
    use super::*;

    fn with_recent(count: i64) -> Given {
        let mut given = established();
        for i in 0..count {
            given = given.paid(base() - (50 - 10 * i) * MINUTE, PAYEE, 10_000);
        }
        given
    }

    #[test]
    fn fires_at_the_count_within_the_window() {
        // Four in the last 50 minutes plus this one make five.
        let findings = with_recent(4).score(PAYEE, 10_000, base());
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(finding.rule, RULE_BURST);
        assert_eq!(finding.measure("payments_in_window"), Some(5));
        assert_eq!(
            finding.explanation,
            "this is payment 5 to this payee within 1 hour; the earliest of them was submitted \
             50 minutes before it (the rule fires at 5 payments)"
        );
    }

    #[test]
    fn older_payments_fall_out_of_the_window() {
        assert!(with_recent(3).score(PAYEE, 10_000, base()).is_empty());
        let given = with_recent(3).paid(base() - 61 * MINUTE, PAYEE, 10_000);
        assert!(given.score(PAYEE, 10_000, base()).is_empty());
    }
}

mod payee_name_lookalike {
    use super::*;

    fn pair() -> Given {
        Given::default()
            .payee(
                base() - 40 * 24 * HOUR,
                OTHER,
                "Acme Plumbing Pty Ltd",
                "11111111",
            )
            .payee(base() - 20 * 24 * HOUR, PAYEE, "ACME Plumbinq", "22222222")
    }

    #[test]
    fn names_both_payees_and_the_score() {
        let findings = pair().score(PAYEE, 10_000, base());
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(finding.rule, RULE_LOOKALIKE_NAME);
        // The look-alike form maps `i` to `l`: "acmeplumblnq" against "acmeplumblng" is
        // one substitution in 12 characters.
        assert_eq!(finding.measure("similarity_permille"), Some(916));
        assert_eq!(finding.related_payee_id, Some(OTHER));
        assert_eq!(
            finding.explanation,
            format!(
                "the name of payee {PAYEE} looks like the name of payee {OTHER}, added \
                 earlier: similarity 0.916 between their look-alike forms (the rule fires at \
                 0.850)"
            )
        );
    }

    /// Findings are stored in plain `anomaly.flagged` events, which an erasure cannot
    /// reach, so an explanation names payees by id and never quotes a name or its
    /// look-alike form.
    #[test]
    fn explanations_carry_no_name() {
        let findings = pair().score(PAYEE, 10_000, base() - 19 * 24 * HOUR);
        assert!(findings.len() >= 2, "{findings:?}");
        for finding in &findings {
            for word in ["Acme", "ACME", "Plumb", "plumb"] {
                assert!(
                    !finding.explanation.contains(word),
                    "{} quotes {word:?}: {}",
                    finding.rule,
                    finding.explanation
                );
            }
        }
    }

    #[test]
    fn the_older_payee_is_not_flagged() {
        assert!(pair().score(OTHER, 10_000, base()).is_empty());
    }

    #[test]
    fn different_names_are_quiet() {
        let given = Given::default()
            .payee(
                base() - 40 * 24 * HOUR,
                OTHER,
                "Globex Corporation",
                "11111111",
            )
            .payee(base() - 20 * 24 * HOUR, PAYEE, "Initech", "22222222");
        assert!(given.score(PAYEE, 10_000, base()).is_empty());
    }

    #[test]
    fn a_release_after_the_warning_ends_it() {
        let payment_id = Uuid::from_u128(0x77);
        let at = base() - 24 * HOUR;
        let flagged = PaymentFlagged {
            payment_id,
            payee_id: PAYEE,
            amount_minor: 10_000,
            currency: "AUD".into(),
            findings: pair().score(PAYEE, 10_000, at),
            history_position: 1,
            evaluated_at_micros: at,
            time_zone: "Australia/Sydney".into(),
        };
        let released = PaymentReviewed {
            payment_id,
            flag_event_id: Uuid::from_u128(0x78),
            decision: ReviewDecision::Release,
            reason: "checked with the payee by phone".into(),
            auth: auth(),
        };
        let given = pair()
            .paid_as(at, PAYEE, payment_id, 10_000)
            .event(at, DomainEvent::PaymentFlagged(flagged))
            .event(at + HOUR, DomainEvent::PaymentReviewed(released));
        assert!(given.score(PAYEE, 10_000, base()).is_empty());
    }
}

#[test]
fn findings_come_in_rule_order_and_repeat_exactly() {
    // A new payee, paid at night, five times in an hour, with a name like an older one's.
    let mut given = Given::default()
        .payee(base() - 40 * 24 * HOUR, OTHER, "Acme Plumbing", "11111111")
        .payee(base() - HOUR, PAYEE, "Acme Plumbinq", "22222222");
    let night = utc(2026, 6, 1, 16, 0);
    for minutes in [40, 30, 20, 10] {
        given = given.paid(night - minutes * MINUTE, PAYEE, 10_000);
    }
    let findings = given.score(PAYEE, 10_000, night);
    let rules: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, [RULE_UNUSUAL_HOUR, RULE_BURST, RULE_LOOKALIKE_NAME]);
    assert_eq!(given.score(PAYEE, 10_000, night), findings);
}

#[test]
#[should_panic(expected = "out of order")]
fn history_refuses_a_gap() {
    let mut history = History::new();
    history.apply(
        1,
        0,
        &DomainEvent::PayeeRemoved(PayeeRemoved {
            payee_id: PAYEE,
            reason: String::new(),
        }),
    );
}
