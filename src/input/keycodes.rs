//! `KeyboardEvent.code` (the physical key, independent of layout) → Linux evdev keycode
//! (`linux/input-event-codes.h`), and DOM mouse buttons → evdev `BTN_*` codes. Pure tables.
//!
//! `code` names a key by its position on a US keyboard ("KeyQ" is the key that types "a" on AZERTY), which is
//! exactly what an evdev keycode is: the compositor's keymap (uploaded by us, `[input] layout`) turns it into a
//! symbol, so a viewer on any layout types what the server-side layout says that key types.

/// evdev codes of the modifier keys (for callers that need to recognise them).
pub const KEY_LEFTSHIFT: u32 = 42;
pub(crate) const KEY_RIGHTSHIFT: u32 = 54;
pub const KEY_LEFTCTRL: u32 = 29;
pub const KEY_LEFTALT: u32 = 56;
pub const KEY_LEFTMETA: u32 = 125;
pub const KEY_CAPSLOCK: u32 = 58;

/// Every `KeyboardEvent.code` we accept and its evdev keycode.
const TABLE: &[(&str, u32)] = &[
    ("Escape", 1),
    ("Digit1", 2),
    ("Digit2", 3),
    ("Digit3", 4),
    ("Digit4", 5),
    ("Digit5", 6),
    ("Digit6", 7),
    ("Digit7", 8),
    ("Digit8", 9),
    ("Digit9", 10),
    ("Digit0", 11),
    ("Minus", 12),
    ("Equal", 13),
    ("Backspace", 14),
    ("Tab", 15),
    ("KeyQ", 16),
    ("KeyW", 17),
    ("KeyE", 18),
    ("KeyR", 19),
    ("KeyT", 20),
    ("KeyY", 21),
    ("KeyU", 22),
    ("KeyI", 23),
    ("KeyO", 24),
    ("KeyP", 25),
    ("BracketLeft", 26),
    ("BracketRight", 27),
    ("Enter", 28),
    ("ControlLeft", KEY_LEFTCTRL),
    ("KeyA", 30),
    ("KeyS", 31),
    ("KeyD", 32),
    ("KeyF", 33),
    ("KeyG", 34),
    ("KeyH", 35),
    ("KeyJ", 36),
    ("KeyK", 37),
    ("KeyL", 38),
    ("Semicolon", 39),
    ("Quote", 40),
    ("Backquote", 41),
    ("ShiftLeft", KEY_LEFTSHIFT),
    ("Backslash", 43),
    ("KeyZ", 44),
    ("KeyX", 45),
    ("KeyC", 46),
    ("KeyV", 47),
    ("KeyB", 48),
    ("KeyN", 49),
    ("KeyM", 50),
    ("Comma", 51),
    ("Period", 52),
    ("Slash", 53),
    ("ShiftRight", KEY_RIGHTSHIFT),
    ("NumpadMultiply", 55),
    ("AltLeft", KEY_LEFTALT),
    ("Space", 57),
    ("CapsLock", KEY_CAPSLOCK),
    ("F1", 59),
    ("F2", 60),
    ("F3", 61),
    ("F4", 62),
    ("F5", 63),
    ("F6", 64),
    ("F7", 65),
    ("F8", 66),
    ("F9", 67),
    ("F10", 68),
    ("NumLock", 69),
    ("ScrollLock", 70),
    ("Numpad7", 71),
    ("Numpad8", 72),
    ("Numpad9", 73),
    ("NumpadSubtract", 74),
    ("Numpad4", 75),
    ("Numpad5", 76),
    ("Numpad6", 77),
    ("NumpadAdd", 78),
    ("Numpad1", 79),
    ("Numpad2", 80),
    ("Numpad3", 81),
    ("Numpad0", 82),
    ("NumpadDecimal", 83),
    ("IntlBackslash", 86),
    ("F11", 87),
    ("F12", 88),
    ("IntlRo", 89),
    ("NumpadEnter", 96),
    ("ControlRight", 97),
    ("NumpadDivide", 98),
    ("PrintScreen", 99),
    ("AltRight", 100),
    ("Home", 102),
    ("ArrowUp", 103),
    ("PageUp", 104),
    ("ArrowLeft", 105),
    ("ArrowRight", 106),
    ("End", 107),
    ("ArrowDown", 108),
    ("PageDown", 109),
    ("Insert", 110),
    ("Delete", 111),
    ("NumpadEqual", 117),
    ("Pause", 119),
    ("NumpadComma", 121),
    ("IntlYen", 124),
    ("MetaLeft", KEY_LEFTMETA),
    ("MetaRight", 126),
    // Older browsers (Firefox < 118) call the Super keys OSLeft/OSRight.
    ("OSLeft", KEY_LEFTMETA),
    ("OSRight", 126),
    ("ContextMenu", 127),
    ("F13", 183),
    ("F14", 184),
    ("F15", 185),
    ("F16", 186),
    ("F17", 187),
    ("F18", 188),
    ("F19", 189),
    ("F20", 190),
    ("F21", 191),
    ("F22", 192),
    ("F23", 193),
    ("F24", 194),
];

/// The evdev keycode of a `KeyboardEvent.code`, `None` for codes we do not map.
pub fn evdev_keycode(code: &str) -> Option<u32> {
    TABLE.iter().find(|(c, _)| *c == code).map(|&(_, k)| k)
}

/// The `KeyboardEvent.code` of an evdev keycode (the first name, for logs and tests).
pub fn code_name(keycode: u32) -> Option<&'static str> {
    TABLE.iter().find(|&&(_, k)| k == keycode).map(|&(c, _)| c)
}

/// evdev code of a DOM `MouseEvent.button` (0 main/left, 1 auxiliary/middle, 2 secondary/right, 3 back,
/// 4 forward).
pub fn evdev_button(dom_button: u8) -> Option<u32> {
    match dom_button {
        0 => Some(0x110), // BTN_LEFT
        1 => Some(0x112), // BTN_MIDDLE
        2 => Some(0x111), // BTN_RIGHT
        3 => Some(0x113), // BTN_SIDE
        4 => Some(0x114), // BTN_EXTRA
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_named_keys_map_to_evdev() {
        assert_eq!(evdev_keycode("KeyA"), Some(30));
        assert_eq!(evdev_keycode("KeyZ"), Some(44));
        assert_eq!(evdev_keycode("Digit0"), Some(11));
        assert_eq!(evdev_keycode("Digit1"), Some(2));
        assert_eq!(evdev_keycode("Enter"), Some(28));
        assert_eq!(evdev_keycode("Space"), Some(57));
        assert_eq!(evdev_keycode("ShiftLeft"), Some(KEY_LEFTSHIFT));
        assert_eq!(evdev_keycode("ArrowLeft"), Some(105));
        assert_eq!(evdev_keycode("F12"), Some(88));
        assert_eq!(evdev_keycode("F24"), Some(194));
        assert_eq!(evdev_keycode("OSLeft"), evdev_keycode("MetaLeft"));
        assert_eq!(evdev_keycode("keya"), None, "codes are case-sensitive");
        assert_eq!(evdev_keycode(""), None);
        assert_eq!(evdev_keycode("Unidentified"), None);
    }

    #[test]
    fn every_letter_and_function_key_is_present_and_codes_are_unique_per_name() {
        for c in 'A'..='Z' {
            assert!(evdev_keycode(&format!("Key{c}")).is_some(), "Key{c}");
        }
        for n in 1..=24 {
            assert!(evdev_keycode(&format!("F{n}")).is_some(), "F{n}");
        }
        for (i, (a, _)) in TABLE.iter().enumerate() {
            assert!(TABLE[i + 1..].iter().all(|(b, _)| a != b), "{a} listed twice");
        }
        assert_eq!(code_name(30), Some("KeyA"));
        assert_eq!(code_name(KEY_LEFTMETA), Some("MetaLeft"));
    }

    #[test]
    fn dom_buttons_map_to_btn_codes() {
        assert_eq!(evdev_button(0), Some(0x110));
        assert_eq!(evdev_button(1), Some(0x112));
        assert_eq!(evdev_button(2), Some(0x111));
        assert_eq!(evdev_button(5), None);
    }
}
