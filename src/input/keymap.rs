//! The virtual keyboard's keymap and modifier state, through libxkbcommon (a pure library: no display).
//!
//! [`Keyboard`] compiles the configured layout (`[input] layout`/`variant`, US by default) into the keymap text
//! that is uploaded with `zwp_virtual_keyboard_v1.keymap`, follows the keys we press in an `xkb_state` so the
//! `modifiers` request always carries the masks that keymap defines (Shift, Lock = CapsLock, Control, Mod1 =
//! Alt, Mod4 = Super, level-3 shift where the layout has one), and knows which key (plus Shift) types a
//! character, for text paste. xkbcommon objects are not `Send`: a `Keyboard` lives on the injector thread.

use std::collections::HashMap;

use xkbcommon::xkb;

use super::InputError;
use super::keycodes::KEY_LEFTSHIFT;

/// xkb keycodes are evdev keycodes + 8.
const EVDEV_OFFSET: u32 = 8;
/// evdev code of Enter and Tab (text paste types them for '\n' and '\t').
const KEY_ENTER: u32 = 28;
const KEY_TAB: u32 = 15;

/// The modifier masks of a `modifiers` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mods {
    pub depressed: u32,
    pub latched: u32,
    pub locked: u32,
    pub group: u32,
}

/// The keymap, its state, and the character → key table.
pub struct Keyboard {
    keymap: xkb::Keymap,
    state: xkb::State,
    chars: HashMap<char, (u32, bool)>,
}

impl std::fmt::Debug for Keyboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyboard").field("chars", &self.chars.len()).finish_non_exhaustive()
    }
}

impl Keyboard {
    /// Compile the keymap of `layout` (e.g. "us", "de") and `variant` ("" for the default).
    pub fn new(layout: &str, variant: &str) -> Result<Keyboard, InputError> {
        if layout.is_empty() || !crate::config::valid_xkb_name(layout) || !crate::config::valid_xkb_name(variant) {
            return Err(InputError::Keymap(format!("invalid layout {layout:?} / variant {variant:?}")));
        }
        // Ignore XKB_DEFAULT_* in our environment: the configured layout is what the viewer gets.
        let ctx = xkb::Context::new(xkb::CONTEXT_NO_ENVIRONMENT_NAMES);
        let keymap = xkb::Keymap::new_from_names(
            &ctx,
            "evdev",
            "pc105",
            layout,
            variant,
            None,
            xkb::KEYMAP_COMPILE_NO_FLAGS,
        )
        .ok_or_else(|| {
            InputError::Keymap(format!(
                "xkbcommon cannot compile layout {layout:?} variant {variant:?} (is xkb-data installed, and does \
                 /usr/share/X11/xkb/symbols/{layout} exist?)"
            ))
        })?;
        let state = xkb::State::new(&keymap);
        let chars = char_table(&keymap);
        Ok(Keyboard { keymap, state, chars })
    }

    /// The keymap as text (`xkb_v1` format), without a terminating NUL.
    pub fn keymap_text(&self) -> String {
        self.keymap.get_as_string(xkb::KEYMAP_FORMAT_TEXT_V1)
    }

    /// Follow a key press or release; the new modifier masks when they changed.
    pub fn update_key(&mut self, evdev: u32, down: bool) -> Option<Mods> {
        let dir = if down { xkb::KeyDirection::Down } else { xkb::KeyDirection::Up };
        let changed = self.state.update_key(xkb::Keycode::new(evdev + EVDEV_OFFSET), dir);
        (changed != 0).then(|| self.mods())
    }

    /// The current modifier masks.
    pub fn mods(&self) -> Mods {
        Mods {
            depressed: self.state.serialize_mods(xkb::STATE_MODS_DEPRESSED),
            latched: self.state.serialize_mods(xkb::STATE_MODS_LATCHED),
            locked: self.state.serialize_mods(xkb::STATE_MODS_LOCKED),
            group: self.state.serialize_layout(xkb::STATE_LAYOUT_EFFECTIVE),
        }
    }

    /// The mask bit of a modifier by its xkb name (`xkb::MOD_NAME_SHIFT`, …); 0 when the keymap has none.
    pub fn mod_mask(&self, name: &str) -> u32 {
        let idx = self.keymap.mod_get_index(name);
        if idx < 32 { 1 << idx } else { 0 }
    }

    /// The key (evdev) and whether Shift is needed to type `c` with this keymap (first layout only).
    pub(crate) fn key_for_char(&self, c: char) -> Option<(u32, bool)> {
        match c {
            '\n' => Some((KEY_ENTER, false)),
            '\t' => Some((KEY_TAB, false)),
            _ => self.chars.get(&c).copied(),
        }
    }

    /// The key presses that type `text`: (evdev code, down) in order, Shift around characters that need it;
    /// and how many characters this keymap cannot type (skipped).
    pub fn text_to_keys(&self, text: &str) -> (Vec<(u32, bool)>, usize) {
        let mut keys = Vec::new();
        let mut skipped = 0;
        for c in text.chars() {
            let Some((key, shift)) = self.key_for_char(c) else {
                skipped += 1;
                continue;
            };
            if shift {
                keys.push((KEY_LEFTSHIFT, true));
            }
            keys.push((key, true));
            keys.push((key, false));
            if shift {
                keys.push((KEY_LEFTSHIFT, false));
            }
        }
        (keys, skipped)
    }
}

/// Which key, on level 1 (plain) or level 2 (Shift), types each character. The first (lowest keycode)
/// key wins, and a plain level wins over a shifted one.
/// Layouts tried against a viewer's browser layout map (`navigator.keyboard.getLayoutMap()`), common first.
pub const CANDIDATE_LAYOUTS: &[&str] = &[
    "us", "de", "fr", "gb", "es", "it", "ch", "at", "be", "nl", "se", "no", "dk", "fi", "pt", "br", "pl", "cz", "sk",
    "hu", "si", "hr", "tr", "ru", "ua", "gr",
];

impl Keyboard {
    /// The character `evdev` types with no modifier (first layout, level 1), if it types one.
    pub fn base_char(&self, evdev: u32) -> Option<char> {
        let sym = *self.keymap.key_get_syms_by_level(xkb::Keycode::new(evdev + EVDEV_OFFSET), 0, 0).first()?;
        char::from_u32(xkb::keysym_to_utf32(sym)).filter(|c| !c.is_control() && *c != '\0')
    }

    /// How many of a viewer's (key, character) pairs this keymap types the same way, unshifted.
    pub fn matches(&self, map: &[(u32, char)]) -> usize {
        map.iter()
            .filter(|&&(key, c)| self.base_char(key).is_some_and(|b| b.to_lowercase().eq(c.to_lowercase())))
            .count()
    }
}

/// The candidate layouts' keymaps, compiled the first time a guess needs them and kept (a viewer's page may
/// send its layout map again; compiling 26 keymaps each time would stall the injector).
#[derive(Default)]
pub struct LayoutCandidates {
    /// `CANDIDATE_LAYOUTS[i]` compiled (None: it does not compile here), for the first `compiled.len()`.
    compiled: Vec<Option<Keyboard>>,
}

impl LayoutCandidates {
    /// The candidate layout whose keymap types most of a viewer's layout map, with its match count: `None`
    /// when the map is empty or no candidate compiles. Ties go to the earlier (more common) layout.
    pub fn guess(&mut self, map: &[(u32, char)]) -> Option<(&'static str, usize)> {
        if map.is_empty() {
            return None;
        }
        let mut best: Option<(&'static str, usize)> = None;
        for (i, &layout) in CANDIDATE_LAYOUTS.iter().enumerate() {
            if i == self.compiled.len() {
                self.compiled.push(Keyboard::new(layout, "").ok());
            }
            let Some(kbd) = &self.compiled[i] else { continue };
            let n = kbd.matches(map);
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((layout, n));
            }
            if n == map.len() {
                break;
            }
        }
        best
    }
}

/// [`LayoutCandidates::guess`] with keymaps compiled for this one guess.
pub fn guess_layout(map: &[(u32, char)]) -> Option<(&'static str, usize)> {
    LayoutCandidates::default().guess(map)
}

fn char_table(keymap: &xkb::Keymap) -> HashMap<char, (u32, bool)> {
    let mut chars: HashMap<char, (u32, bool)> = HashMap::new();
    keymap.key_for_each(|km, kc| {
        let raw = kc.raw();
        let Some(evdev) = raw.checked_sub(EVDEV_OFFSET) else { return };
        let levels = km.num_levels_for_key(kc, 0).min(2);
        for level in 0..levels {
            for &sym in km.key_get_syms_by_level(kc, 0, level) {
                let Some(c) = char::from_u32(xkb::keysym_to_utf32(sym)).filter(|c| !c.is_control()) else {
                    continue;
                };
                let candidate = (evdev, level == 1);
                chars
                    .entry(c)
                    .and_modify(|old| {
                        if (candidate.1, candidate.0) < (old.1, old.0) {
                            *old = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
        }
    });
    chars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::keycodes::{KEY_CAPSLOCK, KEY_LEFTALT, KEY_LEFTCTRL, KEY_LEFTMETA, evdev_keycode};

    fn us() -> Keyboard {
        Keyboard::new("us", "").expect("US keymap (xkb-data)")
    }

    #[test]
    fn us_keymap_compiles_to_text() {
        let kb = us();
        let text = kb.keymap_text();
        assert!(text.starts_with("xkb_keymap {"), "{}", &text[..40.min(text.len())]);
        assert!(text.contains("xkb_symbols"));
        assert!(Keyboard::new("no-such-layout", "").is_err());
        assert!(Keyboard::new("us\0", "").is_err(), "NUL refused before it reaches C");
        assert!(Keyboard::new("", "").is_err());
        assert!(Keyboard::new("de", "nodeadkeys").is_ok());
    }

    #[test]
    fn modifier_masks_follow_the_keys() {
        let mut kb = us();
        let shift = kb.mod_mask(xkb::MOD_NAME_SHIFT);
        let ctrl = kb.mod_mask(xkb::MOD_NAME_CTRL);
        let alt = kb.mod_mask(xkb::MOD_NAME_ALT);
        let sup = kb.mod_mask(xkb::MOD_NAME_LOGO);
        let caps = kb.mod_mask(xkb::MOD_NAME_CAPS);
        assert!([shift, ctrl, alt, sup, caps].iter().all(|m| m.count_ones() == 1), "all five exist");
        assert_eq!(kb.mods(), Mods::default());
        assert_eq!(kb.update_key(KEY_LEFTSHIFT, true).map(|m| m.depressed), Some(shift));
        assert_eq!(kb.update_key(30, true), None, "a letter changes no modifier");
        assert_eq!(kb.update_key(30, false), None);
        assert_eq!(kb.update_key(KEY_LEFTCTRL, true).map(|m| m.depressed), Some(shift | ctrl));
        assert_eq!(kb.update_key(KEY_LEFTALT, true).map(|m| m.depressed), Some(shift | ctrl | alt));
        assert_eq!(kb.update_key(KEY_LEFTMETA, true).map(|m| m.depressed), Some(shift | ctrl | alt | sup));
        for k in [KEY_LEFTSHIFT, KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTMETA] {
            kb.update_key(k, false);
        }
        assert_eq!(kb.mods(), Mods::default());
        // CapsLock locks on the first press and unlocks on the second.
        kb.update_key(KEY_CAPSLOCK, true);
        kb.update_key(KEY_CAPSLOCK, false);
        assert_eq!(kb.mods().locked, caps);
        kb.update_key(KEY_CAPSLOCK, true);
        kb.update_key(KEY_CAPSLOCK, false);
        assert_eq!(kb.mods().locked, 0);
    }

    #[test]
    fn characters_map_to_keys_with_shift_where_needed() {
        let kb = us();
        let a = evdev_keycode("KeyA").expect("KeyA");
        assert_eq!(kb.key_for_char('a'), Some((a, false)));
        assert_eq!(kb.key_for_char('A'), Some((a, true)));
        assert_eq!(kb.key_for_char('1'), evdev_keycode("Digit1").map(|k| (k, false)));
        assert_eq!(kb.key_for_char('!'), evdev_keycode("Digit1").map(|k| (k, true)));
        assert_eq!(kb.key_for_char(' '), evdev_keycode("Space").map(|k| (k, false)));
        assert_eq!(kb.key_for_char('\n'), Some((KEY_ENTER, false)));
        assert_eq!(kb.key_for_char('é'), None, "not on a US keyboard");
        let (keys, skipped) = kb.text_to_keys("Hi é");
        let h = evdev_keycode("KeyH").expect("KeyH");
        let i = evdev_keycode("KeyI").expect("KeyI");
        let space = evdev_keycode("Space").expect("Space");
        assert_eq!(
            keys,
            [
                (KEY_LEFTSHIFT, true),
                (h, true),
                (h, false),
                (KEY_LEFTSHIFT, false),
                (i, true),
                (i, false),
                (space, true),
                (space, false)
            ]
        );
        assert_eq!(skipped, 1);
    }

    #[test]
    fn layouts_differ() {
        let de = Keyboard::new("de", "").expect("German keymap");
        // On a German keyboard the key at US "Y" types z.
        assert_eq!(de.key_for_char('z'), evdev_keycode("KeyY").map(|k| (k, false)));
        assert_eq!(de.key_for_char('ä'), evdev_keycode("Quote").map(|k| (k, false)));
    }

    #[test]
    fn a_german_layout_map_is_recognised() {
        use crate::input::keycodes::evdev_keycode;
        let pairs = |v: &[(&str, char)]| -> Vec<(u32, char)> {
            v.iter().map(|&(code, c)| (evdev_keycode(code).expect("known code"), c)).collect()
        };
        let german = pairs(&[
            ("KeyQ", 'q'),
            ("KeyW", 'w'),
            ("KeyY", 'z'),
            ("KeyZ", 'y'),
            ("Semicolon", 'ö'),
            ("Quote", 'ä'),
            ("BracketLeft", 'ü'),
            ("Minus", 'ß'),
        ]);
        assert_eq!(guess_layout(&german), Some(("de", 8)));
        let us = pairs(&[("KeyY", 'y'), ("KeyZ", 'z'), ("Semicolon", ';'), ("Quote", '\'')]);
        assert_eq!(guess_layout(&us), Some(("us", 4)));
        let french = pairs(&[("KeyQ", 'a'), ("KeyA", 'q'), ("KeyW", 'z'), ("KeyZ", 'w'), ("Semicolon", 'm')]);
        assert_eq!(guess_layout(&french).map(|g| g.0), Some("fr"));
        assert_eq!(guess_layout(&[]), None);
    }
}
