/** Small command-line helpers shared by the tasks: errors, progress, flag checks. */
import { KERNEL_PLAN_ENV, parsePlanKind, PLAN_KINDS, type PlanKind } from "../runtime/gpu.ts";

/** An error meant for the user: printed as one line, exit code 2 (bad input) or 1. */
export class UserError extends Error {
  constructor(message: string, readonly exitCode = 2) {
    super(message);
  }
}

/**
 * Run a task's main, turning errors into one clear line and a non-zero exit code. A bad
 * TRITRAIN_KERNEL_PLAN (read by every device the task creates) is refused first, as bad input.
 */
export function runMain(task: string, main: () => Promise<number | void>): void {
  Promise.resolve().then(() => kernelPlanSetting(undefined)).then(main).then(
    (code) => Deno.exit(typeof code === "number" ? code : 0),
    (e) => {
      const error = e as Error;
      console.error(`${task}: error: ${error.message}`);
      if (Deno.env.get("TRITRAIN_DEBUG")) console.error(error.stack);
      Deno.exit(e instanceof UserError ? e.exitCode : 1);
    },
  );
}

/** Parse a positive integer flag, or throw a UserError naming it. */
export function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new UserError(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Parse a non-negative integer flag. */
export function nonNegativeInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    throw new UserError(`--${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Parse a finite number flag. */
export function finiteNumber(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) {
    throw new UserError(`--${name} must be a number, got ${JSON.stringify(value)}`);
  }
  return n;
}

/** Check a value is one of the allowed names. */
export function oneOf<T extends string>(
  name: string,
  value: string | undefined,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UserError(
      `--${name} must be one of ${allowed.join(", ")}; got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

/**
 * The kernel plans a task runs (KernelSettings.plan): `--kernel-plan` when given, else the
 * environment's TRITRAIN_KERNEL_PLAN, else "auto"; an unknown name is a UserError.
 */
export function kernelPlanSetting(flagValue: string | undefined): PlanKind {
  if (flagValue !== undefined) return oneOf("kernel-plan", flagValue, PLAN_KINDS)!;
  try {
    return parsePlanKind(Deno.env.get(KERNEL_PLAN_ENV), KERNEL_PLAN_ENV) ?? "auto";
  } catch (e) {
    throw new UserError(`${(e as Error).message} (or unset it for "auto")`);
  }
}

/** Seconds as h:mm:ss or m:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/** A progress line: redrawn in place on a terminal, printed as plain lines otherwise. */
export class Progress {
  private readonly tty = Deno.stdout.isTerminal();
  private lastLength = 0;

  /** `quiet`: print nothing (data-parallel ranks other than 0). */
  constructor(readonly quiet = false) {}

  /** Show a status; `final` forces a plain line even on a terminal. */
  update(text: string, final = false): void {
    if (this.quiet) return;
    if (this.tty && !final) {
      const padded = text.padEnd(this.lastLength);
      Deno.stdout.writeSync(new TextEncoder().encode(`\r${padded}`));
      this.lastLength = text.length;
    } else {
      this.clear();
      console.log(text);
    }
  }

  /** A bar for a fraction done. */
  bar(fraction: number, width = 24): string {
    const filled = Math.round(Math.min(1, Math.max(0, fraction)) * width);
    return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`;
  }

  /** Print a normal log line without breaking the progress line. */
  log(text: string): void {
    if (this.quiet) return;
    this.clear();
    console.log(text);
  }

  private clear(): void {
    if (this.tty && this.lastLength > 0) {
      Deno.stdout.writeSync(new TextEncoder().encode(`\r${" ".repeat(this.lastLength)}\r`));
      this.lastLength = 0;
    }
  }
}
