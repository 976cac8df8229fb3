//! A `Read + Seek` view of a byte range of another reader (a stored zip inside a zip).

use std::io::{self, Read, Seek, SeekFrom};

pub(crate) struct Window<'a, R> {
    inner: &'a mut R,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, R: Read + Seek> Window<'a, R> {
    pub(crate) fn new(inner: &'a mut R, start: u64, len: u64) -> Self {
        Window {
            inner,
            start,
            len,
            pos: 0,
        }
    }
}

impl<R: Read + Seek> Read for Window<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - self.pos) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Window<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) => {
                self.pos = t;
                Ok(t)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start of window",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_only_its_range() {
        let mut c = Cursor::new(b"0123456789".to_vec());
        let mut w = Window::new(&mut c, 2, 5);
        let mut s = String::new();
        w.read_to_string(&mut s).unwrap();
        assert_eq!(s, "23456");
        w.seek(SeekFrom::End(-2)).unwrap();
        s.clear();
        w.read_to_string(&mut s).unwrap();
        assert_eq!(s, "56");
        assert!(w.seek(SeekFrom::Current(-10)).is_err());
        w.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(w.read(&mut [0u8; 4]).unwrap(), 0);
    }
}
