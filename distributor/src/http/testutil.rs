//! Helpers shared by the tests of this module.

/// A small deterministic generator (xorshift64), so the mutation tests
/// need no dependency and always run the same cases.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    /// `base` with a few bytes replaced, inserted or removed, drawing
    /// new bytes from `alphabet`.
    pub(crate) fn mutate(&mut self, base: &[u8], alphabet: &[u8]) -> Vec<u8> {
        let mut out = base.to_vec();
        for _ in 0..=self.below(3) {
            let at = self.below(out.len() + 1);
            let byte = alphabet[self.below(alphabet.len())];
            match self.below(3) {
                0 if at < out.len() => out[at] = byte,
                1 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.insert(at, byte),
            }
        }
        out
    }
}
