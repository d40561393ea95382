//! The guest kernel: the uncompressed ELF `vmlinux` is extracted from the distribution's
//! bzImage, because QEMU boots an ELF kernel through PVH seconds faster under TCG.

use std::io::Read;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("not a bzImage (no HdrS header)")]
    NotBzImage,
    #[error("the bzImage payload lies outside the file")]
    BadPayload,
    #[error("the kernel payload is compressed with {0}, which miglab cannot unpack (xz, gzip and zstd are supported); boot the bzImage instead")]
    Unsupported(&'static str),
    #[error("could not decompress the kernel payload: {0}")]
    Decompress(std::io::Error),
    #[error("the decompressed kernel is not an ELF file")]
    NotElf,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The compressed payload of a bzImage (boot protocol ≥ 2.08).
pub fn payload(bz: &[u8]) -> Result<&[u8], KernelError> {
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err(KernelError::NotBzImage);
    }
    let setup_sects = match bz.get(0x1f1) {
        Some(0) => 4,
        Some(n) => *n as usize,
        None => return Err(KernelError::NotBzImage),
    };
    let offset = u32_at(bz, 0x248).ok_or(KernelError::NotBzImage)? as usize;
    let length = u32_at(bz, 0x24c).ok_or(KernelError::NotBzImage)? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    bz.get(start..start + length).ok_or(KernelError::BadPayload)
}

/// Decompresses the payload into the ELF vmlinux.
pub fn extract_vmlinux(bz: &[u8]) -> Result<Vec<u8>, KernelError> {
    let p = payload(bz)?;
    let mut out = Vec::with_capacity(p.len() * 4);
    // xz and zstd payloads end with the uncompressed size (4 bytes, little endian), which
    // their decoders would take for the start of a second stream.
    let sized = |p: &'_ [u8]| -> Result<(usize, Vec<u8>), KernelError> {
        let split = p.len().checked_sub(4).ok_or(KernelError::BadPayload)?;
        let size = u32_at(p, split).ok_or(KernelError::BadPayload)? as usize;
        Ok((size, p[..split].to_vec()))
    };
    let mut expect = None;
    let r = if p.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let (size, stream) = sized(p)?;
        expect = Some(size);
        xz2::read::XzDecoder::new(&stream[..]).read_to_end(&mut out)
    } else if p.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(p).read_to_end(&mut out)
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let (size, stream) = sized(p)?;
        expect = Some(size);
        zstd::stream::read::Decoder::new(&stream[..]).and_then(|mut d| d.read_to_end(&mut out))
    } else if p.starts_with(b"BZh") {
        return Err(KernelError::Unsupported("bzip2"));
    } else if p.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        return Err(KernelError::Unsupported("lz4"));
    } else {
        return Err(KernelError::Unsupported("an unknown format"));
    };
    r.map_err(KernelError::Decompress)?;
    if expect.is_some_and(|n| n != out.len()) {
        return Err(KernelError::BadPayload);
    }
    if !out.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal bzImage: setup sectors with the header, then an xz payload of a fake ELF.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4usize;
        let mut b = vec![0u8; (setup_sects + 1) * 512];
        b[0x1f1] = setup_sects as u8;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let offset = 100u32;
        b[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, offset as usize));
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn extracts_an_xz_payload_and_ignores_the_size_trailer() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(100);
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(&elf).expect("xz");
        let mut p = enc.finish().expect("xz");
        p.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(extract_vmlinux(&fake_bzimage(&p)).expect("extract"), elf);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(extract_vmlinux(b"nothing"), Err(KernelError::NotBzImage)));
        let e = extract_vmlinux(&fake_bzimage(b"BZh91AY&SY")).expect_err("bzip2");
        assert!(e.to_string().contains("bzip2"));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"not an elf").expect("gz");
        let e = extract_vmlinux(&fake_bzimage(&enc.finish().expect("gz"))).expect_err("not elf");
        assert!(matches!(e, KernelError::NotElf));
    }
}
