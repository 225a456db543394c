//! What of a guest's console bytes reaches the operator's terminal.
//!
//! Guest output is untrusted: left alone, a guest could move the cursor or
//! clear the line (`\r`, `ESC [2K`) and print a line that looks like the
//! hypervisor's, hide the line that says it was stopped, retitle the
//! terminal or worse (OSC sequences), or reorder what is shown with Unicode
//! direction overrides. What is kept: printable ASCII, tab and newline, and
//! well-formed UTF-8 text. Dropped: every other control character and every
//! escape sequence whole (CSI, OSC and the other string sequences, and
//! two-byte escapes), so a coloured shell prompt stays legible, only
//! uncoloured. Malformed UTF-8, C1 controls and the invisible direction and
//! isolate controls become `?`.

/// Where the filter is in an escape sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Esc {
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [` ... up to the final byte (0x40-0x7e).
    Csi,
    /// Inside a string sequence (OSC `ESC ]`, DCS `ESC P`, SOS, PM, APC),
    /// up to BEL or the string terminator `ESC \`.
    String,
    /// ESC inside a string sequence (a terminator, if `\` follows).
    StringEscape,
}

/// The filter's state between writes (a sequence may span two writes).
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    esc: Esc,
    /// A UTF-8 sequence being assembled: its bytes so far and how many it
    /// needs in all.
    utf8: [u8; 4],
    have: u8,
    need: u8,
}

impl Default for Filter {
    fn default() -> Self {
        Self::new()
    }
}

impl Filter {
    pub const fn new() -> Self {
        Self { esc: Esc::None, utf8: [0; 4], have: 0, need: 0 }
    }

    /// Feeds one guest byte; calls `out` with what to show (nothing, one
    /// byte, or a whole UTF-8 character).
    pub fn feed(&mut self, b: u8, out: &mut impl FnMut(&[u8])) {
        match self.esc {
            Esc::None => {}
            Esc::Start => {
                self.esc = match b {
                    b'[' => Esc::Csi,
                    b']' | b'P' | b'X' | b'^' | b'_' => Esc::String,
                    // An intermediate byte: the sequence goes on.
                    0x20..=0x2f => Esc::Start,
                    _ => Esc::None,
                };
                return;
            }
            Esc::Csi => {
                if !(0x20..=0x3f).contains(&b) {
                    self.esc = Esc::None; // the final byte, or garbage: the sequence ends
                }
                return;
            }
            Esc::String => {
                self.esc = match b {
                    0x07 => Esc::None,
                    0x1b => Esc::StringEscape,
                    _ => Esc::String,
                };
                return;
            }
            Esc::StringEscape => {
                self.esc = if b == b'\\' { Esc::None } else { Esc::String };
                return;
            }
        }
        if self.need != 0 {
            if b & 0xc0 == 0x80 && self.continues(b) {
                self.utf8[self.have as usize] = b;
                self.have += 1;
                if self.have == self.need {
                    let n = self.need as usize;
                    self.need = 0;
                    let ch = self.utf8;
                    if shown(decode(&ch[..n])) {
                        out(&ch[..n]);
                    } else {
                        out(b"?");
                    }
                }
                return;
            }
            // A sequence cut short: it becomes `?`, and this byte starts afresh.
            self.need = 0;
            out(b"?");
        }
        match b {
            b'\t' | b'\n' | 0x20..=0x7e => out(&[b]),
            0x1b => self.esc = Esc::Start,
            0xc2..=0xdf => self.start(b, 2),
            0xe0..=0xef => self.start(b, 3),
            0xf0..=0xf4 => self.start(b, 4),
            0x80..=0xff => out(b"?"),
            _ => {} // other controls: dropped
        }
    }

    fn start(&mut self, b: u8, need: u8) {
        self.utf8[0] = b;
        self.have = 1;
        self.need = need;
    }

    /// Is `b` a valid second byte for the sequence so far? (No overlong
    /// forms, no surrogates, nothing above U+10FFFF.)
    fn continues(&self, b: u8) -> bool {
        if self.have != 1 {
            return true;
        }
        match self.utf8[0] {
            0xe0 => b >= 0xa0,
            0xed => b < 0xa0,
            0xf0 => b >= 0x90,
            0xf4 => b < 0x90,
            _ => true,
        }
    }
}

fn decode(s: &[u8]) -> u32 {
    let lead = match s.len() {
        2 => (s[0] & 0x1f) as u32,
        3 => (s[0] & 0x0f) as u32,
        _ => (s[0] & 0x07) as u32,
    };
    s[1..].iter().fold(lead, |cp, &b| cp << 6 | (b & 0x3f) as u32)
}

/// May this code point be shown? Not a C1 control, not one of the
/// invisible characters that change the direction or order of what follows.
fn shown(cp: u32) -> bool {
    !matches!(cp, 0x80..=0x9f | 0x061c | 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(bytes: &[u8]) -> String {
        let mut f = Filter::new();
        let mut out = Vec::new();
        for &b in bytes {
            f.feed(b, &mut |s| out.extend_from_slice(s));
        }
        String::from_utf8(out).expect("the filter only lets valid UTF-8 through")
    }

    #[test]
    fn plain_text_passes() {
        assert_eq!(filter(b"hello\tworld\n"), "hello\tworld\n");
        assert_eq!(filter("grüße, 日本, 🦀\n".as_bytes()), "grüße, 日本, 🦀\n");
    }

    #[test]
    fn a_guest_cannot_forge_or_hide_a_line() {
        // Return to the start of the line, erase it, print a fake line.
        assert_eq!(filter(b"secret\r\x1b[2Ktessera: vm ok\n"), "secrettessera: vm ok\n");
        // Cursor up and erase (hiding the line before).
        assert_eq!(filter(b"\x1b[1A\x1b[2Kx\n"), "x\n");
        // A terminal title (OSC, BEL- and ST-terminated) and a DCS string.
        assert_eq!(filter(b"\x1b]0;owned\x07a\x1b]2;t\x1b\\b\x1bPq#0\x1b\\c\n"), "abc\n");
        // Backspace, bell, form feed, DEL: dropped.
        assert_eq!(filter(b"a\x08b\x07c\x0cd\x7f\n"), "abcd\n");
        // 8-bit CSI (0x9b) and the C1 range as UTF-8 (U+009B).
        assert_eq!(filter(b"\x9b2J|\xc2\x9b2J\n"), "?2J|?2J\n");
    }

    #[test]
    fn a_coloured_prompt_stays_legible() {
        assert_eq!(filter(b"\x1b[1;32mroot@vm\x1b[0m:\x1b[34m~\x1b[0m# "), "root@vm:~# ");
    }

    #[test]
    fn direction_overrides_and_bad_utf8_become_question_marks() {
        assert_eq!(filter("a\u{202e}txt.exe\u{2066}b".as_bytes()), "a?txt.exe?b");
        assert_eq!(filter(b"\xff\xc3(\xe0\x80\x80\xed\xa0\x80\xf4\x90\x80\x80z"), "??(??????????z");
        assert_eq!(filter(b"\xe6\x97"), "", "an unfinished character waits for the rest");
        assert_eq!(filter(b"\xe6\x97\n"), "?\n");
    }

    #[test]
    fn sequences_span_writes() {
        let mut f = Filter::new();
        let mut out = Vec::new();
        for chunk in [&b"a\x1b"[..], b"[3", b"1mb\xe6", b"\x97\xa5c"] {
            for &b in chunk {
                f.feed(b, &mut |s| out.extend_from_slice(s));
            }
        }
        assert_eq!(String::from_utf8(out).unwrap(), "ab日c");
    }
}
