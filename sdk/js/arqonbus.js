// ArqonBus JavaScript SDK: placeholder, replaced by the SDK itself (issue 10).
export class ArqonBus {}
export class ArqonBusError extends Error {}
