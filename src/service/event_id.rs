//! SSE change ids: a change's id is `<seq>.<instance>` (sequence numbers belong to one
//! instance), and a resume position (`Last-Event-ID`) names where it came from, so a resume that
//! lands on another instance of the region is answered with `reset` rather than a replay from a
//! wrong place. Its own file because both the SSE rendering and the subscribe parsing need it.

/// This instance's tag in change event ids (`<seq>.<tag>`), set once at start.
static INSTANCE_TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the tag change ids carry: the instance id's letters and digits (at most 32). Sequence
/// numbers belong to one instance; the tag lets another instance of the region tell a resume
/// position it never issued and answer `reset` instead of replaying from a wrong place.
pub fn set_instance(instance_id: &str) {
    let tag: String = instance_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let _ = INSTANCE_TAG.set(tag);
}

pub fn instance_tag() -> &'static str {
    INSTANCE_TAG.get().map_or("", String::as_str)
}

/// A resume position (`Last-Event-ID` or `?last_event_id=`): `<seq>` or `<seq>.<tag>`. A tag
/// of another instance gives a position past every sequence, which the hub answers with `reset`.
pub fn resume_position(id: &str) -> Option<u64> {
    let (seq, tag) = match id.trim().split_once('.') {
        Some((seq, tag)) => (seq, Some(tag)),
        None => (id.trim(), None),
    };
    let seq = seq.parse::<u64>().ok()?;
    match tag {
        Some(t) if t != instance_tag() => Some(u64::MAX),
        Some(_) | None => Some(seq),
    }
}
