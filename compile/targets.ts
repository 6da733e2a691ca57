import type { NativeTarget } from "../src/permissions/native_addons.ts";

export const TARGETS = {
  "aarch64-unknown-linux-gnu": { os: "linux", arch: "arm64", elfMachine: 0xb7, elfName: "AArch64" },
  "x86_64-unknown-linux-gnu": { os: "linux", arch: "x64", elfMachine: 0x3e, elfName: "x86-64" },
} as const satisfies Record<string, NativeTarget & { elfMachine: number; elfName: string }>;

export type Target = keyof typeof TARGETS;

export function isTarget(value: string): value is Target {
  return value in TARGETS;
}

/** The ELF e_machine of a file (little-endian 64-bit), or null when it is not ELF. */
export async function elfMachine(path: string): Promise<number | null> {
  const file = await Deno.open(path);
  try {
    const header = new Uint8Array(20);
    const read = await file.read(header);
    if (
      read === null || read < 20 || header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46
    ) {
      return null;
    }
    return header[18] | (header[19] << 8);
  } finally {
    file.close();
  }
}
