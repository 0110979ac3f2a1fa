// Error classes of the format (format/SPEC.md "Errors"): the same classes the Python
// reader raises, so a caller can tell a damaged file from a missing model. Every
// message is one line.

export class CodecError extends Error {
  constructor(message) {
    super(String(message).split('\n')[0]);
    this.name = new.target.name;
  }
}
export class FormatError extends CodecError {}
export class BadMagicError extends FormatError {}
export class TruncatedError extends FormatError {}
export class MissingEndMarkerError extends TruncatedError {}
export class UnsupportedVersionError extends FormatError {}
export class UnknownRecordKindError extends FormatError {}
export class LengthOutOfRangeError extends FormatError {}
export class ChecksumError extends FormatError {}
export class InvalidFieldError extends FormatError {}
export class PayloadError extends FormatError {}
export class TokenChecksumError extends CodecError {}
export class ModelMismatchError extends CodecError {}
export class DecodeLimitError extends CodecError {}
/** A classical record in a format this decoder cannot decode (WebP without a WebP decoder). */
export class MissingCodecError extends CodecError {}
/** The model bundle is missing, incomplete or fails its own hashes (not a file defect). */
export class BundleError extends CodecError {}
