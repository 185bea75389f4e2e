/** Imports runtime/mpi.ts and prints its exports: run without permissions by tests/mpi_test.ts. */
import * as mpi from "../../runtime/mpi.ts";

console.log(Object.keys(mpi).sort().join(","));
