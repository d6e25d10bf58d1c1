export * from './fleet.js';
export * from './platform.js';
